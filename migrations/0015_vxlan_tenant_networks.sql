-- Tenant networks across hosts (issue 19): every tenant network is VXLAN, with a VNI of its own,
-- and each compute host reports the underlay address its tunnels start from.

-- Owned by the API (api/network/networks.py): the network's type ('vxlan', or 'local' when an
-- admin asks for a host-local one) and its segment (the VNI), unique per type. New VNIs come from
-- vxlan_vni; the networks made before this migration get one each, and the VXLAN MTU.
CREATE SEQUENCE vxlan_vni AS integer MINVALUE 1 MAXVALUE 16777215 NO CYCLE;
ALTER TABLE networks
    ADD COLUMN network_type     text NOT NULL DEFAULT 'vxlan' CHECK (network_type IN ('vxlan', 'local')),
    ADD COLUMN segmentation_id  integer CHECK (segmentation_id BETWEEN 1 AND 16777215);
UPDATE networks SET segmentation_id = nextval('vxlan_vni'), mtu = LEAST(mtu, 1450);
CREATE UNIQUE INDEX networks_segment ON networks (network_type, segmentation_id);

-- Owned by the host agent's report (actors/hosts.py): where its VXLAN tunnels start (NULL: the
-- host has no underlay; its networks stay on its own bridges).
ALTER TABLE compute_hosts ADD COLUMN tunnel_ip inet;
