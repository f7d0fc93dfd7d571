#!/usr/bin/env bash
# Checks a built .deb the way an operator's machine would meet it: its
# control fields and file list (dpkg-deb --info/--contents), the unit
# (systemd-analyze verify, against the package's own files), the maintainer
# scripts, and the installed binary running a member and answering a
# client and a scrape, from a throwaway root (dpkg -x).
# With EMBER_DEB_INSTALL=1, as root, on a machine where no `ember` package,
# user or group exists, it then installs the package for real (dpkg -i),
# checks what the maintainer scripts promise, purges it and checks that
# nothing is left; whatever happens, the machine is left as it was found.
# Usage: ports/debian/check.sh target/debian/ember_<version>_<arch>.deb
set -euo pipefail
deb=$(realpath "$1")
root=$(mktemp -d)
serve_pid=
installed=
cleanup() {
    if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; fi
    rm -rf "$root"
    if [ -n "$installed" ]; then
        # A check failed between install and purge: undo the install.
        dpkg --purge ember >/dev/null 2>&1 || true
        getent passwd ember >/dev/null && deluser --system ember >/dev/null 2>&1 || true
        getent group ember >/dev/null && delgroup --system ember >/dev/null 2>&1 || true
        rm -rf /var/lib/ember
    fi
}
trap cleanup EXIT
fail() { echo "check.sh: $*" >&2; exit 1; }

info=$(dpkg-deb --info "$deb")
for field in "Package: ember" "Architecture: $(dpkg --print-architecture)" "Depends:" "Section: database"; do
    grep -q "^ $field" <<<"$info" || fail "control lacks '$field':"$'\n'"$info"
done
for script in postinst postrm prerm; do
    grep -q " $script" <<<"$info" || fail "no $script in the control archive"
done

contents=$(dpkg-deb --contents "$deb")
for path in ./usr/bin/ember ./usr/lib/systemd/system/ember.service ./etc/default/ember \
    ./usr/share/bash-completion/completions/ember ./usr/share/zsh/vendor-completions/_ember \
    ./usr/share/man/man1/ember.1.gz ./usr/share/doc/ember/copyright; do
    grep -q " $path\$" <<<"$contents" || fail "the package lacks $path:"$'\n'"$contents"
done
grep -Eq "^-rwxr-xr-x (root/root|0/0) .* ./usr/bin/ember$" <<<"$contents" || fail "usr/bin/ember is not 0755 root"

dpkg-deb -x "$deb" "$root"
dpkg-deb -e "$deb" "$root/DEBIAN"
sh -n "$root/DEBIAN/postinst"
sh -n "$root/DEBIAN/postrm"
grep -q "adduser --system" "$root/DEBIAN/postinst" || fail "postinst creates no system user"
grep -qx "/etc/default/ember" "$root/DEBIAN/conffiles" || fail "/etc/default/ember is not a conffile"

# The unit as systemd reads it: a copy whose ExecStart names the extracted
# binary (verify checks that it exists and is executable), everything else
# as packaged. systemd-analyze exits 0 on a setting it ignores, so any word
# it says fails the check.
unit="$root/usr/lib/systemd/system/ember.service"
mkdir "$root/verify"
sed "s|^ExecStart=/usr/bin/ember|ExecStart=$root/usr/bin/ember|" "$unit" > "$root/verify/ember.service"
said=$(systemd-analyze verify --man=no "$root/verify/ember.service" 2>&1) || fail "systemd-analyze verify: $said"
[ -z "$said" ] || fail "systemd-analyze verify: $said"
grep -q '^Type=notify$' "$unit" && grep -q '^WatchdogSec=' "$unit" && grep -q '^StateDirectory=ember$' "$unit" \
    || fail "the unit lost Type=notify, its watchdog or its state directory"

man -l "$root/usr/share/man/man1/ember.1.gz" >/dev/null 2>&1 || zcat "$root/usr/share/man/man1/ember.1.gz" | grep -q '^\.TH EMBER 1'
bash -n "$root/usr/share/bash-completion/completions/ember"

# The installed binary runs a member, serves a client and a scrape.
bin="$root/usr/bin/ember"
"$bin" --help >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
peer=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve --data-dir "$root/var/lib/ember/default.ember" \
    --listen-client-urls "127.0.0.1:$port" --listen-peer-urls "127.0.0.1:$peer" 2>"$root/serve.log" &
serve_pid=$!
for _ in $(seq 50); do
    "$bin" --endpoints "127.0.0.1:$port" put deb/check ok >/dev/null 2>&1 && break
    sleep 0.2
done
[ "$("$bin" --endpoints "127.0.0.1:$port" get deb/check --print-value-only)" = ok ] \
    || fail "the installed binary did not serve a put and a get: $(cat "$root/serve.log")"
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
grep -q '^etcd_mvcc_put_total 1$' <&3 || fail "the installed binary's /metrics did not count the put"
echo "check.sh: $(basename "$deb") is well formed, its unit verifies and its binary serves"
[ "${EMBER_DEB_INSTALL:-0}" = 1 ] || exit 0

# Installed on this machine. Only on one that has no trace of Ember: the
# purge at the end must leave it exactly as it was found.
[ "$(id -u)" = 0 ] || fail "EMBER_DEB_INSTALL=1 needs root (dpkg -i)"
if dpkg-query -W ember >/dev/null 2>&1; then fail "an ember package is known to dpkg here already; not touching it"; fi
if getent passwd ember >/dev/null || getent group ember >/dev/null; then fail "an ember user or group exists here already; not touching it"; fi
[ ! -e /var/lib/ember ] && [ ! -e /usr/bin/ember ] && [ ! -e /etc/default/ember ] \
    || fail "/var/lib/ember, /usr/bin/ember or /etc/default/ember exists here already; not touching it"
installed=1
dpkg -i "$deb" >"$root/dpkg-install.log" 2>&1 || fail "dpkg -i: $(cat "$root/dpkg-install.log")"
[ "$(dpkg-query -W -f='${Status}' ember)" = "install ok installed" ] || fail "dpkg does not list ember as installed"
user=$(getent passwd ember) || fail "postinst created no ember user"
getent group ember >/dev/null || fail "postinst created no ember group"
uid=$(cut -d: -f3 <<<"$user")
[ "$uid" -lt 1000 ] || fail "the ember user is not a system user: $user"
[ "$(cut -d: -f6 <<<"$user")" = /var/lib/ember ] || fail "the ember user's home is not /var/lib/ember: $user"
[ "$(id -gn ember)" = ember ] || fail "the ember user's group is not ember: $(id ember)"
/usr/bin/ember --version | grep -q '^ember ' || fail "/usr/bin/ember --version: $(/usr/bin/ember --version 2>&1)"
runuser -u ember -- /usr/bin/ember --help >/dev/null || fail "/usr/bin/ember --help does not run as the ember user"
[ -f /usr/lib/systemd/system/ember.service ] || fail "the unit is not at /usr/lib/systemd/system/ember.service"
said=$(systemd-analyze verify --man=no /usr/lib/systemd/system/ember.service 2>&1) || fail "systemd-analyze verify (installed): $said"
[ -z "$said" ] || fail "systemd-analyze verify (installed): $said"
dpkg-query -W -f='${Conffiles}\n' ember | grep -q '^ /etc/default/ember ' || fail "dpkg lists no conffile /etc/default/ember"
[ -f /etc/default/ember ] || fail "/etc/default/ember was not installed"

# Purged: the package's files, its conffile, the data directory and the
# user go, as postrm promises.
dpkg --purge ember >"$root/dpkg-purge.log" 2>&1 || fail "dpkg --purge: $(cat "$root/dpkg-purge.log")"
if dpkg-query -W ember >/dev/null 2>&1; then fail "dpkg still knows ember after --purge"; fi
if getent passwd ember >/dev/null; then fail "the ember user survived the purge"; fi
if getent group ember >/dev/null; then fail "the ember group survived the purge"; fi
for path in /usr/bin/ember /etc/default/ember /usr/lib/systemd/system/ember.service /var/lib/ember; do
    [ ! -e "$path" ] || fail "$path survived the purge"
done
installed=
echo "check.sh: $(basename "$deb") installed with dpkg -i (user, group, unit, conffile, binary) and purged without a trace"
