#!/usr/bin/env bash
# Build the base image of the local test and demo hosts, once: a minimal
# Debian made by debootstrap that boots systemd and runs sshd, as a cloud
# server comes, carrying this machine's CA bundle so that package installs
# inside it trust the same TLS roots. Each container gets a machine id of
# its own at first boot (the image's is emptied, as cloud images do).
#   usage: build-image.sh DISTRO      (debian12 | debian13)
# The image is reused while it exists and has this script's REVISION;
# FORCE=1 rebuilds it.
set -euo pipefail

distro=${1:-debian12}
case "$distro" in
  debian12) suite=bookworm ;;
  debian13) suite=trixie ;;
  *) echo "build-image.sh: unsupported distro '$distro' (debian12 or debian13)" >&2; exit 2 ;;
esac
image=${IMAGE_PREFIX:-localhost/asgi-provisioner}-${distro}:latest
# Raised whenever what goes into the image changes: an older image is rebuilt.
REVISION=2
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "${FORCE:-0}" != 1 ] && podman image exists "$image" &&
   [ "$(podman image inspect --format '{{ index .Labels "asgi-provisioner.revision" }}' "$image")" = "$REVISION" ]; then
  echo "image $image exists"
  exit 0
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
echo "building $image from Debian $suite (debootstrap, about a minute)"
debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,dbus,python3,python3-apt,ca-certificates,iproute2,procps,openssh-server \
  "$suite" "$root" "$mirror" >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; exit 1; }
rm -f "$root.log"

if [ -s "$ca_bundle" ]; then
  install -m 0644 "$ca_bundle" "$root/usr/local/share/ca-certificates/build-host.crt"
  chroot "$root" update-ca-certificates >/dev/null 2>&1
fi
# A container has no console to log in on, and nothing needs these at boot.
chroot "$root" systemctl mask getty.target console-getty.service \
  systemd-resolved.service systemd-timesyncd.service >/dev/null 2>&1 || true
rm -rf "$root"/var/cache/apt/archives/*.deb
# No machine id in the image: systemd gives each container its own at boot
# (podman passes the container's id), so no two hosts share one.
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"

tar -C "$root" -c . | podman import \
  --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' \
  --change "LABEL asgi-provisioner.revision=$REVISION" - "$image" >/dev/null
echo "built $image"
