#!/bin/sh
# Install the Debian packages of the list file $1 that are missing: as root on Debian, with the
# packages' own services kept from starting (nginx and apache2 would both want port 80, and a failed
# start fails the install). Elsewhere, say in one line what to install: the tests that need a missing
# package are then skipped (with CI=true they fail). Each package is checked with `dpkg -s` first,
# so a second run installs nothing and costs a fraction of a second.
set -eu
list=$1
missing=""
for package in $(sed -e 's/#.*//' "$list"); do
    dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "make test: missing packages:$missing (Debian: apt-get install --no-install-recommends$missing); their tests are skipped" >&2
    exit 0
fi
echo "make test: installing$missing"
ours=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    ours=1
    trap '[ -z "$ours" ] || rm -f /usr/sbin/policy-rc.d' EXIT  # also when the install fails
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086 # one word per package
apt-get install -y -qq --no-install-recommends $missing >/dev/null
