#!/usr/bin/env bash
# Build the base image of the local test and demo hosts, once: a minimal
# Debian made by debootstrap that boots systemd and runs sshd, as a cloud
# server comes, carrying this machine's CA bundle so that package installs
# inside it trust the same TLS roots. Each container gets a machine id of
# its own at first boot (the image's is emptied, as cloud images do).
#   usage: build-image.sh DISTRO [warm]     (debian12 | debian13)
# The image is reused while it exists and has this script's REVISION;
# FORCE=1 rebuilds it.
#
# `warm` builds a second image on top of the base one, <base>-warm: the
# same host with Debian's packages that site.yml and the test tooling
# install already installed (nothing configured, no service of the
# roles'). The scenarios whose point is not the first install use it (the
# cluster, multi-app and tls ones); default and managers converge bare
# hosts, with every process manager.
set -euo pipefail

distro=${1:-debian12}
variant=${2:-}
case "$variant" in
  ''|warm) ;;
  *) echo "build-image.sh: unknown variant '$variant' (warm or nothing)" >&2; exit 2 ;;
esac
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

# Debian's packages of the warm image: what the roles install for an app
# under systemd (python, nginx, certbot) and the test tooling of the tls
# scenario (pebble, testssl.sh, curl).
WARM_PACKAGES="python3-venv python3-pip zstd nginx openssl certbot curl pebble python3-cryptography testssl.sh"

current() {  # current IMAGE REVISION: the image exists at that revision
  podman image exists "$1" &&
    [ "$(podman image inspect --format '{{ index .Labels "asgi-provisioner.revision" }}' "$1")" = "$2" ]
}

build_warm() {
  local warm=${image%:latest}-warm:latest revision="$REVISION:$(echo "$WARM_PACKAGES" | sha1sum | cut -c1-12)"
  if [ "${FORCE:-0}" != 1 ] && current "$warm" "$revision"; then
    echo "image $warm exists"
    return
  fi
  echo "building $warm (Debian's packages of site.yml preinstalled, a minute or two)"
  local name=asgi-image-warm-$$
  podman rm -f -t 0 "$name" >/dev/null 2>&1 || true
  # No service starts during the install (policy-rc.d); the units are
  # enabled as the packages ship them, and start when a host boots.
  podman run --name "$name" --network host "$image" sh -euc "
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 0755 /usr/sbin/policy-rc.d
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $WARM_PACKAGES >/dev/null
    rm -f /usr/sbin/policy-rc.d /var/cache/apt/archives/*.deb
    : > /etc/machine-id" || { podman rm -f -t 0 "$name" >/dev/null; exit 1; }
  podman commit --quiet \
    --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' \
    --change "LABEL asgi-provisioner.revision=$revision" "$name" "$warm" >/dev/null
  podman rm -f -t 0 "$name" >/dev/null
  echo "built $warm"
}

if [ "${FORCE:-0}" != 1 ] && current "$image" "$REVISION"; then
  echo "image $image exists"
  [ "$variant" != warm ] || build_warm
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
[ "$variant" != warm ] || build_warm
