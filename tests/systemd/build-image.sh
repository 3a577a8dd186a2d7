#!/bin/sh
# Build the root filesystem image that tests/test_systemd_boot.py boots with systemd
# as PID 1: Debian bookworm (minbase) plus what pymon's README install block and the
# scenario need, the host's kernel modules (the image boots the host's
# /boot/vmlinuz-VER), and a oneshot unit that runs the scenario from the 9p share.
#
#   build-image.sh KERNEL_VERSION OUT.img
#
# Runs as root (mmdebstrap's root mode: chroot + network for apt). The caller caches
# OUT.img under a name hashed from this script, packages.txt and the kernel version.
set -eu
ver=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /var/tmp/pymon-systemd-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root

pkgs=$(grep -v '^#' "$here/packages.txt" | tr '\n' ',' | sed 's/,*$//')
mmdebstrap --variant=minbase --include="$pkgs" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    bookworm "$root" http://deb.debian.org/debian

# Modules for the host's kernel (ip_vs, 9p, dummy; virtio_blk and ext4 come from the
# initrd). Graphics, sound, wireless and storage controllers are left out: size only.
mkdir -p "$root/lib/modules"
tar -C /lib/modules -cf - \
    --exclude="$ver/kernel/drivers/gpu" --exclude="$ver/kernel/drivers/media" \
    --exclude="$ver/kernel/drivers/net/wireless" --exclude="$ver/kernel/drivers/net/ethernet" \
    --exclude="$ver/kernel/drivers/infiniband" --exclude="$ver/kernel/sound" \
    --exclude="$ver/kernel/drivers/staging" --exclude="$ver/kernel/drivers/scsi" \
    "$ver" | tar -C "$root/lib/modules" -xf -
chroot "$root" depmod "$ver"

echo pymon-guest > "$root/etc/hostname"
: > "$root/etc/machine-id"   # first boot makes one
# The root is /dev/vda, mounted rw by the kernel command line; the share is 9p.
printf '%s\n' 'share /share 9p trans=virtio,version=9p2000.L,msize=262144,nofail 0 0' \
    > "$root/etc/fstab"
mkdir -p "$root/share"
ln -sf /dev/null "$root/etc/systemd/system/apt-daily.timer"
ln -sf /dev/null "$root/etc/systemd/system/apt-daily-upgrade.timer"
ln -sf /dev/null "$root/etc/systemd/system/e2scrub_all.timer"
ln -sf /dev/null "$root/etc/systemd/system/fstrim.timer"
ln -sf /dev/null "$root/etc/systemd/system/serial-getty@ttyS0.service"

# The scenario: /share/scenario.sh, run once after boot, its output to the share and
# the console, then poweroff (also on failure: the host waits for qemu to exit).
cat > "$root/etc/systemd/system/pymon-scenario.service" <<'UNIT'
[Unit]
Description=pymon systemd test scenario (from the 9p share)
After=multi-user.target
RequiresMountsFor=/share

[Service]
Type=oneshot
ExecStart=/bin/sh -c '/bin/sh /share/scenario.sh > /share/output 2>&1; echo $? > /share/status'
ExecStopPost=/bin/systemctl --no-block poweroff
StandardOutput=journal+console
TimeoutStartSec=15min

[Install]
WantedBy=multi-user.target
UNIT
ln -sf ../pymon-scenario.service "$root/etc/systemd/system/multi-user.target.wants/pymon-scenario.service"

rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/*_Packages
# 1.5 GiB, of which ~600 MiB used: the install block's venv and pymon's state need room.
mkfs.ext4 -q -F -L pymon-root -d "$root" "$work/img" 1536M
mv "$work/img" "$out"
