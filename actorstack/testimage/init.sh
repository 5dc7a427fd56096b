#!/bin/busybox sh
# /init of the actorstack test image: a busybox userland in an initramfs, booted by SYSLINUX
# from the image's FAT partition. It proves a cloud works from the inside and says so on the
# serial console, every line it writes starting with "actorstack-guest: ":
#   boot <kernel release>                     init started
#   lease eth0 ip=<ip>/<prefix> router=… …    DHCP answered (udhcpc, see /etc/udhcpc.script)
#   meta_data.json <one line of JSON>         GET /openstack/latest/meta_data.json
#   openssh-key <key>                         GET /latest/meta-data/public-keys/0/openssh-key
#   hostname <name>                           set from the metadata
#   listening tcp 8080                        an HTTP server answers with the hostname
#   ready                                     the checks ran; the guest stays up
#   volume <dev> serial=<id> found=<old> wrote=<marker> read=<marker> ok|MISMATCH
#   volume <dev> gone                         a disk was hot-unplugged
#   poweroff                                  ACPI power button pressed: powering off
# Failures say "… failed: <why>". Nothing here is configurable: the cloud's answers are the test.
B=/bin/busybox
$B mkdir -p /proc /sys /dev /tmp /run /bin /sbin /usr/bin /usr/sbin
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
$B --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/ TERM=dumb
exec >/dev/console 2>&1 </dev/null

say() { echo "actorstack-guest: $*"; }
say "boot $(uname -r)"
# Order matters: each module needs the ones before it (no modprobe, no modules.dep here).
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk \
         failover net_failover virtio_net button evdev; do
    insmod /lib/modules/$m.ko 2>/dev/null || say "module $m failed to load"
done
ip link set lo up

# The ACPI power button (`openstack server stop`) powers the guest off: the kernel reports it as
# KEY_POWER (type 1, code 116) on an input device; each event is 24 bytes.
power_button() {
    for dev in /sys/class/input/event*; do
        [ "$(cat $dev/device/name 2>/dev/null)" = "Power Button" ] || continue
        (
            exec 3</dev/input/${dev##*/}  # held open: the kernel queues events between reads
            while true; do
                set -- $(dd bs=24 count=1 <&3 2>/dev/null | od -An -v -tu2 -w24)
                if [ "$9 ${10} ${11}" = "1 116 1" ]; then
                    say "poweroff"
                    sync
                    poweroff -f
                fi
            done
        ) &
    done
}
power_button

# DHCP on eth0 (it appears once virtio_net has probed).
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
if [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up
    # -b: keep trying in the background if no answer; once bound, udhcpc renews the lease.
    udhcpc -i eth0 -s /etc/udhcpc.script -t 10 -T 2 -A 5 -b -S -O staticroutes -O mtu >/dev/null 2>&1
else
    say "lease failed: no eth0"
fi

# HTTP from the metadata service with busybox nc, whose -e program talks over the connection: it
# sends the request and keeps reading until the server closes. (Piping the request into nc
# would half-close the connection at the request's end, and the server may drop the answer.)
cat >/tmp/http-request <<'EOF'
#!/bin/sh
printf 'GET %s HTTP/1.0\r\nHost: 169.254.169.254\r\n\r\n' "$HTTP_PATH"
exec cat >/tmp/response
EOF
chmod +x /tmp/http-request
fetch() {
    : >/tmp/response
    HTTP_PATH=$1 timeout 15 nc -w 5 169.254.169.254 80 -e /tmp/http-request 2>/tmp/nc.err
    rc=$?
    status=$(head -n 1 /tmp/response | cut -d ' ' -f 2)
    [ "$status" = 200 ] && return 0
    echo "HTTP ${status:-no answer} (nc: $rc $(head -c 200 /tmp/nc.err); routes: $(ip route | tr '\n' ';'))"
    return 1
}
body() {
    sed '1,/^\r*$/d' /tmp/response
}
metadata() {
    n=0
    while [ $n -lt 30 ]; do
        if [ -f /run/lease ]; then
            why=$(fetch "$1") && { body; return 0; }
        else
            why="no lease"
        fi
        n=$((n + 1)); sleep 1
    done
    echo "$why"; return 1
}
if doc=$(metadata /openstack/latest/meta_data.json); then
    say "meta_data.json $(echo "$doc" | tr -d '\n')"
    name=$(echo "$doc" | sed -n 's/.*"hostname": *"\([^"]*\)".*/\1/p')
    [ -n "$name" ] && hostname "$name" && say "hostname $name"
else
    say "meta_data.json failed: $doc"
fi
if key=$(metadata /latest/meta-data/public-keys/0/openssh-key); then
    say "openssh-key $(echo "$key" | head -n 1)"
else
    say "openssh-key failed: $key"
fi
# A TCP service to reach from outside (the security group tests): busybox's httpd on port 8080,
# answering with the guest's hostname.
mkdir -p /www && hostname > /www/index.html
if httpd -p 8080 -h /www; then say "listening tcp 8080"; else say "httpd failed"; fi
say "ready"

# Volumes: every disk after vda that appears gets a marker written and read back from the
# device itself (the page cache dropped in between); a marker found there is reported first.
seen=" "
while true; do
    now=" "
    for path in /sys/block/vd*; do
        dev=${path##*/}
        [ -e "$path" ] && [ "$dev" != vda ] || continue
        now="$now$dev "
        case "$seen" in *" $dev "*) continue ;; esac
        serial=$(cat $path/serial 2>/dev/null)
        found=$(dd if=/dev/$dev bs=512 count=1 2>/dev/null | head -n 1 | tr -cd 'a-zA-Z0-9:._-')
        case "$found" in actorstack-marker*) ;; *) found=none ;; esac
        marker="actorstack-marker:$(hostname):$dev:$(date +%s)"
        echo "$marker" | dd of=/dev/$dev bs=512 count=1 conv=sync,fsync 2>/dev/null
        blockdev --flushbufs /dev/$dev 2>/dev/null
        echo 3 >/proc/sys/vm/drop_caches
        read=$(dd if=/dev/$dev bs=512 count=1 2>/dev/null | head -n 1 | tr -cd 'a-zA-Z0-9:._-')
        [ "$read" = "$marker" ] && verdict=ok || verdict=MISMATCH
        say "volume $dev serial=${serial:-none} found=$found wrote=$marker read=${read:-none} $verdict"
    done
    for dev in $seen; do
        case "$now" in *" $dev "*) ;; *) say "volume $dev gone" ;; esac
    done
    seen=$now
    sleep 1
done
