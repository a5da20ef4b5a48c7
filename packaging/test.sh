#!/usr/bin/env bash
# Install test for the accessd packages (issue 8). Runs as root; it never
# installs anything on this machine's own root and never starts a service:
# packages go into throwaway Debian trees (debootstrap minbase, cached) under a
# temporary directory, with `dpkg --root` / `rpm --root`, which run the
# maintainer scripts chrooted into that tree.
#
#   packaging/test.sh            builds both packages (packaging/build.sh) and tests them
#
# What it checks, in order:
#   0. the glibc baseline: objdump -T of both binaries names no GLIBC_
#      version above build.sh's GLIBC_BASELINE, nor do the packages' deps
#   1. the .deb's files, modes, owners, conffiles, control fields, scripts
#   2. the .rpm's files, modes, config flags, requirements, scriptlets
#   3. lintian on the .deb: no errors (warnings are listed)
#   4. dpkg --root install into a Debian tree where systemd is not running:
#      files and modes, units enabled (symlinks) but nothing started, no
#      identity key; systemd-analyze verify of the installed units;
#      `accessd identity` in a chroot creates the key on first use;
#      upgrade keeps a changed conffile, the key and an admin's disable;
#      remove keeps conffile and state; reinstall enables again; purge leaves
#      the tree exactly as it was before the first install
#   5. the same life cycle with a recording systemctl and /run/systemd/system
#      present (what a running system sees): which systemctl calls the .deb
#      scripts and the .rpm scriptlets make on install, upgrade and removal
#
# Tools: dpkg-deb, rpm, lintian, debootstrap, systemd-analyze, python3, chroot, objdump.
# Missing tools fail the test under CI=true; elsewhere it skips with a reason.
# ACCESSD_PKGTEST_CACHE (default /var/cache/accessd-test, outside the clone so
# that CI keeps it between runs) keeps the debootstrap
# tarball between runs; DEBIAN_MIRROR overrides the mirror.
set -euo pipefail
cd "$(dirname "$0")/.."

checks=0
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { checks=$((checks + 1)); }
# expect_eq ACTUAL EXPECTED WHAT
expect_eq() { [ "$1" = "$2" ] || fail "$3: expected '$2', got '$1'"; ok; }
# expect_match TEXT EXTENDED-REGEX WHAT
expect_match() { printf '%s\n' "$1" | grep -Eq -- "$2" || fail "$3: no line matches /$2/ in:
$1"; ok; }
expect_no_match() { ! printf '%s\n' "$1" | grep -Eq -- "$2" || fail "$3: unexpected /$2/ in:
$1"; ok; }
section() { echo "== packaging: $*"; }

# The rule of agent/tests/gate: CI is `true` (any case) or `1`; then a
# missing prerequisite fails. Elsewhere the skip is a `SKIP` line, which
# scripts/test-all lists again at its end.
skip_or_fail() {
  case "${CI:-}" in
    [Tt][Rr][Uu][Ee] | 1) fail "$*" ;;
  esac
  echo "SKIP packaging/test.sh: $*" >&2
  exit 0
}
[ "$(id -u)" = 0 ] || skip_or_fail "needs root (dpkg --root, chroot)"
for tool in dpkg-deb dpkg rpm lintian debootstrap systemd-analyze python3 chroot objdump; do
  command -v "$tool" >/dev/null || skip_or_fail "$tool is missing (scripts/install-test-deps installs it)"
done

tmp=$(mktemp -d /tmp/accessd-pkgtest.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# ---------------------------------------------------------------- build
section "build (current version, and an older one to upgrade from)"
crate_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
old_version="${crate_version}~pkgtest"
mapfile -t new < <(packaging/build.sh --out "$tmp/new")
mapfile -t old < <(packaging/build.sh --version "$old_version" --out "$tmp/old")
deb=${new[0]} rpm=${new[1]} old_deb=${old[0]} old_rpm=${old[1]}
for f in "$deb" "$rpm" "$old_deb" "$old_rpm"; do
  [ -s "$f" ] || fail "build.sh did not produce $f"
  ok
done

# ---------------------------------------------------------------- glibc baseline
# The packaged binaries must run on every distribution with glibc >= 2.17
# (issue 13: the release build once needed GLIBC_2.34 and did not start on
# Debian 11). objdump -T lists each dynamic symbol with the version it binds;
# the highest GLIBC_ one must not be above the baseline build.sh links for.
glibc_baseline=$(sed -n 's/^GLIBC_BASELINE=//p' packaging/build.sh)
[ -n "$glibc_baseline" ] || fail "packaging/build.sh names no GLIBC_BASELINE"
section "glibc baseline $glibc_baseline (objdump -T of the packaged binaries)"
mkdir "$tmp/x-baseline"
dpkg-deb -x "$deb" "$tmp/x-baseline"
# newest_glibc TEXT: the highest N.N in "GLIBC_N.N" occurrences of TEXT.
newest_glibc() { printf '%s\n' "$1" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/^GLIBC_//' | sort -V | tail -n 1; }
# at_most A B: version A <= version B.
at_most() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -n 1)" = "$2" ]; }
for b in accessd accessctl; do
  syms=$(objdump -T "$tmp/x-baseline/usr/bin/$b") || fail "objdump -T $b"
  newest=$(newest_glibc "$syms")
  [ -n "$newest" ] || fail "$b: objdump -T names no GLIBC_ version (not dynamically linked against glibc?)"
  at_most "$newest" "$glibc_baseline" \
    || fail "$b needs GLIBC_$newest, above the baseline $glibc_baseline: $(printf '%s\n' "$syms" | grep "GLIBC_$newest" | head -n 5)"
  ok
  echo "  $b: newest glibc symbol version GLIBC_$newest"
done
# Only glibc's own libraries are needed: libc6 is the .deb's one library
# dependency, so nothing else may appear in NEEDED.
for b in accessd accessctl; do
  needed=$(objdump -p "$tmp/x-baseline/usr/bin/$b" | awk '$1 == "NEEDED" { print $2 }' | sort | paste -sd' ')
  expect_eq "$needed" "ld-linux-x86-64.so.2 libc.so.6 libdl.so.2 libpthread.so.0" "$b: NEEDED libraries (glibc's only)"
done
# The packages' dependencies say the same minimum: the .deb's libc6 (>= V),
# the .rpm's libc.so.6(GLIBC_V)(64bit) requirements; and the .deb's is the
# baseline itself, not more (a libc6 (>= 2.34) would refuse Debian 11).
deb_libc=$(dpkg-deb -f "$deb" Depends | sed -n 's/.*libc6 (>= \([0-9.]*\)).*/\1/p')
[ -n "$deb_libc" ] || fail "deb: no libc6 (>= V) in Depends"
expect_eq "$deb_libc" "$glibc_baseline" "deb: Depends libc6 (>= V)"
rpm_libc=$(newest_glibc "$(rpm -qp --nosignature --requires "$rpm")")
[ -n "$rpm_libc" ] || fail "rpm: no libc.so.6(GLIBC_V) requirement"
at_most "$rpm_libc" "$glibc_baseline" || fail "rpm: requires GLIBC_$rpm_libc, above the baseline $glibc_baseline"
ok
echo "  deb: Depends libc6 (>= $deb_libc); rpm: requires up to GLIBC_$rpm_libc"

# Units and conffile as the package scripts name them; the scripts hard-code
# them, so a renamed unit must fail here rather than ship unenabled.
units=(accessd.service accessd-boot.service)

# ---------------------------------------------------------------- .deb contents
section "inspect $(basename "$deb")"
# "MODE OWNER PATH" for every regular file, symlink and directory.
# dpkg-deb prints owners as names or as ids depending on how the tar was
# written; ids it is.
deb_listing=$(dpkg-deb -c "$deb" | awk '{ p = $6; sub(/^\./, "", p); o = $2; sub(/^root\/root$/, "0/0", o); print $1, o, p }')
expect_match "$deb_listing" '^-rwxr-xr-x 0/0 /usr/bin/accessd$' "deb: accessd binary"
expect_match "$deb_listing" '^-rwxr-xr-x 0/0 /usr/bin/accessctl$' "deb: accessctl binary"
for u in "${units[@]}"; do
  expect_match "$deb_listing" "^-rw-r--r-- 0/0 /lib/systemd/system/$u\$" "deb: unit $u"
done
expect_match "$deb_listing" '^-rw------- 0/0 /etc/accessd/accessd.toml$' "deb: config 0600 root"
# Nothing else, apart from directories and /usr/share/doc/accessd/: an extra
# file (a stray identity key, a test fixture) must not ship.
extra=$(printf '%s\n' "$deb_listing" | grep -v '^d' \
  | grep -Ev ' (/usr/bin/accessd|/usr/bin/accessctl|/lib/systemd/system/accessd(-boot)?\.service|/etc/accessd/accessd\.toml|/usr/share/doc/accessd/[^/]+)$' || true)
expect_eq "$extra" "" "deb: unexpected files"
expect_no_match "$deb_listing" '/var/lib/accessd/.' "deb: no state (identity key) shipped"

deb_conffiles=$(dpkg-deb -I "$deb" conffiles)
expect_eq "$deb_conffiles" "/etc/accessd/accessd.toml" "deb: conffiles"
expect_eq "$(dpkg-deb -f "$deb" Package)" "accessd" "deb: Package"
expect_eq "$(dpkg-deb -f "$deb" Version)" "${crate_version}-1" "deb: Version"
expect_eq "$(dpkg-deb -f "$old_deb" Version)" "${old_version}-1" "deb: Version of the older build"
depends=$(dpkg-deb -f "$deb" Depends)
expect_match "$depends" '(^|, )libc6 \(>= [0-9.]+\)' "deb: Depends on libc6"
expect_match "$depends" '(^|, )init-system-helpers \(>= 1\.8\)(,|$)' "deb: Depends on init-system-helpers"
expect_eq "$(dpkg-deb -f "$deb" Section)" "admin" "deb: Section"
mkdir "$tmp/control"
dpkg-deb -e "$deb" "$tmp/control"
for s in postinst prerm postrm; do
  expect_eq "$(stat -c %a "$tmp/control/$s")" "755" "deb: $s mode"
  cmp -s "$tmp/control/$s" "packaging/debian/$s" || fail "deb: $s differs from packaging/debian/$s"
  ok
  sh -n "$tmp/control/$s" || fail "deb: $s does not parse"
  ok
done
[ ! -e "$tmp/control/preinst" ] || fail "deb: unexpected preinst"
ok

# ---------------------------------------------------------------- .rpm contents
section "inspect $(basename "$rpm")"
# "MODE USER GROUP FLAGS PATH"; FLAGS: c = %config, n = noreplace.
rpm_listing=$(rpm -qp --nosignature --qf '[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm")
expect_match "$rpm_listing" '^-rwxr-xr-x root root  ?/usr/bin/accessd$' "rpm: accessd binary"
expect_match "$rpm_listing" '^-rwxr-xr-x root root  ?/usr/bin/accessctl$' "rpm: accessctl binary"
for u in "${units[@]}"; do
  expect_match "$rpm_listing" "^-rw-r--r-- root root  ?/usr/lib/systemd/system/$u\$" "rpm: unit $u"
done
expect_match "$rpm_listing" '^-rw------- root root cn /etc/accessd/accessd.toml$' "rpm: config 0600 root %config(noreplace)"
expect_eq "$(printf '%s\n' "$rpm_listing" | wc -l)" "5" "rpm: number of files"
expect_eq "$(rpm -qp --nosignature --qf '%{NAME} %{VERSION}' "$rpm")" "accessd $crate_version" "rpm: name and version"
expect_eq "$(rpm -qp --nosignature --qf '%{VERSION}' "$old_rpm")" "$old_version" "rpm: version of the older build"
rpm_requires=$(rpm -qp --nosignature --requires "$rpm")
expect_match "$rpm_requires" '^/bin/sh' "rpm: requires /bin/sh (scriptlets)"
expect_match "$rpm_requires" '^libc\.so\.6' "rpm: requires libc.so.6"
# cargo-generate-rpm takes a script path that does not resolve as the script
# text itself; comparing the bodies catches that.
rpm_scripts=$(rpm -qp --nosignature --scripts "$rpm")
for pair in postinstall:post preuninstall:preun postuninstall:postun; do
  tag=${pair%%:*} file=packaging/rpm/${pair##*:}.sh
  body=$(printf '%s\n' "$rpm_scripts" | awk -v t="$tag scriptlet" 'index($0, t) == 1 { on = 1; next } /^[a-z]+ scriptlet/ { on = 0 } on')
  expect_eq "$body" "$(cat "$file")" "rpm: $tag scriptlet is $file"
  printf '%s\n' "$body" | sh -n || fail "rpm: $tag scriptlet does not parse"
  ok
done
expect_no_match "$rpm_scripts" '^(preinstall|pretrans|posttrans) scriptlet' "rpm: no other scriptlets"

# The packaged config trusts no key (build.sh comments out the example's), and
# is otherwise the example config. (The .rpm's copy is checked once installed.)
check_packaged_config() {
  python3 - "$1" config/accessd.toml <<'EOF' || fail "$2: packaged config"
import sys, tomllib
packaged = tomllib.load(open(sys.argv[1], "rb"))
example = tomllib.load(open(sys.argv[2], "rb"))
assert packaged.get("trust", {}) == {}, f"packaged config trusts keys: {packaged.get('trust')}"
example.pop("trust", None); packaged.pop("trust", None)
assert packaged == example, "packaged config differs from config/accessd.toml outside [trust]"
EOF
  ok
}
mkdir "$tmp/x-deb"
dpkg-deb -x "$deb" "$tmp/x-deb"
check_packaged_config "$tmp/x-deb/etc/accessd/accessd.toml" deb

# ---------------------------------------------------------------- lintian
section "lintian $(basename "$deb")"
lint=$(lintian --tag-display-limit 0 "$deb" 2>&1 || true)
printf '%s\n' "$lint" | sed 's/^/  /'
expect_no_match "$lint" '^E: ' "lintian errors"

# ---------------------------------------------------------------- Debian tree
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$suite" ] || fail "cannot tell this machine's Debian suite from /etc/os-release"
cache=${ACCESSD_PKGTEST_CACHE:-/var/cache/accessd-test}
# systemd: what a cloud image has, and what `systemd-analyze verify --root`
# needs (the targets our units hang off); procps: /bin/kill, which
# accessd.service's ExecReload names.
include=systemd,procps
base_tar="$cache/$suite-minbase-${include//,/-}.tar"
if [ ! -s "$base_tar" ]; then
  section "debootstrap $suite (minbase + $include, cached in $base_tar)"
  mkdir -p "$cache"
  debootstrap --variant=minbase --include="$include" "$suite" "$tmp/bootstrap" \
    "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$tmp/debootstrap.log" 2>&1 \
    || { tail -n 20 "$tmp/debootstrap.log" >&2; fail "debootstrap $suite"; }
  tar -C "$tmp/bootstrap" --numeric-owner -cf "$base_tar.part" .
  mv "$base_tar.part" "$base_tar"
  rm -rf "$tmp/bootstrap"
fi

# new_root NAME: a fresh copy of the base tree at $tmp/NAME.
new_root() {
  local r="$tmp/$1"
  mkdir "$r"
  tar -C "$r" --numeric-owner -xf "$base_tar"
  echo "$r"
}
# Everything in a tree except dpkg's own database and log, which record the
# history of installs by design.
snapshot() {
  (cd "$1" && find . -xdev \( -path ./var/lib/dpkg -o -path ./var/log/dpkg.log -o -path ./var/lib/rpm \) -prune -o \
    -printf '%y %m %u:%g %p -> %l\n' | sort)
}
dpkg_root() { local r=$1; shift; dpkg --root="$r" "$@" >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; fail "dpkg --root $* failed"; }; }
mode_owner() { stat -c '%a %U:%G' "$1"; }

section "install $(basename "$old_deb") into a $suite tree without systemd running"
R=$(new_root deb)
# Belt and braces: nothing is started in this tree even if a script tried.
printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"; chmod 755 "$R/usr/sbin/policy-rc.d"
before=$(snapshot "$R")
dpkg_root "$R" -i "$old_deb"
expect_eq "$(chroot "$R" dpkg-query -W -f '${Status} ${Version}' accessd)" "install ok installed ${old_version}-1" "installed"
expect_eq "$(mode_owner "$R/usr/bin/accessd")" "755 root:root" "installed accessd"
expect_eq "$(mode_owner "$R/usr/bin/accessctl")" "755 root:root" "installed accessctl"
for u in "${units[@]}"; do
  expect_eq "$(mode_owner "$R/lib/systemd/system/$u")" "644 root:root" "installed $u"
done
expect_eq "$(mode_owner "$R/etc/accessd/accessd.toml")" "600 root:root" "installed config"
expect_eq "$(mode_owner "$R/var/lib/accessd")" "700 root:root" "state dir"
expect_eq "$(ls -A "$R/var/lib/accessd")" "" "no identity key before first start"

# enabled_links ROOT: "TARGET.wants/UNIT -> DEST" for each WantedBy of our units.
wanted_links() {
  local r=$1 u t
  for u in "${units[@]}"; do
    for t in $(sed -n 's/^WantedBy=//p' "systemd/$u"); do
      if [ -L "$r/etc/systemd/system/$t.wants/$u" ]; then
        echo "$t.wants/$u -> $(readlink "$r/etc/systemd/system/$t.wants/$u")"
      else
        echo "$t.wants/$u missing"
      fi
    done
  done
}
enabled_expect=$(for u in "${units[@]}"; do for t in $(sed -n 's/^WantedBy=//p' "systemd/$u"); do echo "$t.wants/$u -> /lib/systemd/system/$u"; done; done)
[ -n "$enabled_expect" ] || fail "units have no WantedBy= to enable"
expect_eq "$(wanted_links "$R")" "$enabled_expect" "units enabled on install"

section "systemd-analyze verify (installed units, --root)"
verify=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no --root="$R" "${units[@]}" 2>&1) \
  || { echo "$verify" >&2; fail "systemd-analyze verify"; }
# Ordering against ssh/sshd units that this tree does not have is expected.
bad=$(printf '%s\n' "$verify" | grep -v -e '^$' -e 'ssh\.service' -e 'sshd\.service' || true)
expect_eq "$bad" "" "systemd-analyze verify output"

# chroot_proc ROOT CMD...: CMD chrooted into ROOT with a /proc of its own,
# in a private mount namespace (gone when CMD ends), as image builders
# (debootstrap, mmdebstrap) give their chroots. accessd reads its files
# through /proc/self/fd (fsx: a file judged on its descriptor), so without
# /proc `accessd identity` fails with "opening .../identity.key: No such
# file or directory" (noted for the fsx owner: an image chroot without /proc).
chroot_proc() {
  local r=$1; shift
  unshare -m --propagation private chroot "$r" /bin/sh -c 'mount -t proc proc /proc && exec "$@"' sh "$@"
}
section "accessd identity in a chroot (key created on first use, 0600)"
pub1=$(chroot_proc "$R" /usr/bin/accessd identity --config /etc/accessd/accessd.toml) || fail "accessd identity (first)"
expect_match "$pub1" '^[A-Za-z0-9+/]{43}=$' "identity prints a base64 Ed25519 public key"
state_files=$(cd "$R/var/lib/accessd" && find . -mindepth 1 -printf '%m %u %p\n')
expect_match "$state_files" '^600 root ./identity.key$' "identity key file 0600 root"
# Whatever else the agent keeps there is root's alone too.
expect_no_match "$(printf '%s\n' "$state_files" | awk '{ print substr($1, length($1) - 1) }')" '[^0]' "state files closed to group and others"
expect_eq "$(stat -c %a "$R/var/lib/accessd")" "700" "state dir still 0700"
pub2=$(chroot_proc "$R" /usr/bin/accessd identity --config /etc/accessd/accessd.toml)
expect_eq "$pub2" "$pub1" "identity is stable"
# The image-builder reset documented in docs/install.md: delete the state dir.
rm -rf "$R/var/lib/accessd"
pub3=$(chroot_proc "$R" /usr/bin/accessd identity --config /etc/accessd/accessd.toml) || fail "accessd identity after reset"
[ "$pub3" != "$pub1" ] || fail "a reset identity must be a new key"
ok
expect_eq "$(mode_owner "$R/var/lib/accessd")" "700 root:root" "state dir made again 0700 after reset"
expect_eq "$(stat -c '%a %U' "$R/var/lib/accessd/identity.key")" "600 root" "new identity key 0600"

section "upgrade to $(basename "$deb") keeps a changed config, the key and an admin's disable"
printf '\n# changed by the administrator\n' >>"$R/etc/accessd/accessd.toml"
cp -p "$R/etc/accessd/accessd.toml" "$tmp/changed.toml"
# The administrator disabled the boot unit: an upgrade must not re-enable it.
boot_wants=$(sed -n 's/^WantedBy=//p' systemd/accessd-boot.service | head -n 1)
rm "$R/etc/systemd/system/$boot_wants.wants/accessd-boot.service"
dpkg_root "$R" --force-confold -i "$deb"
expect_eq "$(chroot "$R" dpkg-query -W -f '${Version}' accessd)" "${crate_version}-1" "upgraded"
cmp -s "$R/etc/accessd/accessd.toml" "$tmp/changed.toml" || fail "upgrade replaced the changed config"
ok
expect_eq "$(mode_owner "$R/etc/accessd/accessd.toml")" "600 root:root" "config mode after upgrade"
expect_no_match "$(cat "$tmp/dpkg.log")" 'Configuration file .* modified' "no conffile prompt: the shipped config did not change"
expect_eq "$(chroot_proc "$R" /usr/bin/accessd identity --config /etc/accessd/accessd.toml)" "$pub3" "identity kept across upgrade"
expect_eq "$(wanted_links "$R" | grep accessd-boot)" "$boot_wants.wants/accessd-boot.service missing" "admin-disabled unit stays disabled"
expect_eq "$(wanted_links "$R" | grep -v accessd-boot)" "$(printf '%s\n' "$enabled_expect" | grep -v accessd-boot)" "enabled unit stays enabled"

section "remove keeps config and state; reinstall enables again; purge leaves nothing"
dpkg_root "$R" -r accessd
for f in /usr/bin/accessd /usr/bin/accessctl /lib/systemd/system/accessd.service /lib/systemd/system/accessd-boot.service; do
  [ ! -e "$R$f" ] || fail "remove left $f"
  ok
done
expect_eq "$(wanted_links "$R" | grep -c missing)" "$(printf '%s\n' "$enabled_expect" | wc -l)" "remove disabled every unit"
cmp -s "$R/etc/accessd/accessd.toml" "$tmp/changed.toml" || fail "remove deleted the conffile"
ok
[ -f "$R/var/lib/accessd/identity.key" ] || fail "remove deleted the state (only purge may)"
ok
dpkg_root "$R" -i "$deb"
expect_eq "$(wanted_links "$R")" "$enabled_expect" "reinstall after remove enables both units"
expect_eq "$(chroot_proc "$R" /usr/bin/accessd identity --config /etc/accessd/accessd.toml)" "$pub3" "identity kept across remove + reinstall"
dpkg_root "$R" -P accessd
expect_eq "$(chroot "$R" dpkg-query -W -f '${Status}' accessd 2>/dev/null || true)" "" "purged from dpkg's database"
after=$(snapshot "$R")
leftover=$(diff <(printf '%s\n' "$before") <(printf '%s\n' "$after") || true)
expect_eq "$leftover" "" "purge leaves the tree as it was before install"

# ---------------------------------------------------------------- systemd "running"
# A tree where /run/systemd/system exists (the test systemd uses to tell it is
# running) and systemctl is a script that records its arguments: the calls the
# package makes on a live system, without any service manager involved.
fake_systemd_root() {
  local r
  r=$(new_root "$1")
  mkdir -p "$r/run/systemd/system"
  cat >"$r/usr/bin/systemctl" <<'EOF'
#!/bin/sh
echo "$*" >>/systemctl.log
# deb-systemd-invoke asks before start/restart; answer like an enabled unit.
case "$1" in is-enabled) echo enabled ;; esac
exit 0
EOF
  chmod 755 "$r/usr/bin/systemctl"
  echo "$r"
}
calls() { [ -f "$1/systemctl.log" ] && cat "$1/systemctl.log"; rm -f "$1/systemctl.log"; }

section "deb scripts with systemd running (recorded systemctl)"
R=$(fake_systemd_root deb-live)
dpkg_root "$R" -i "$old_deb"
c=$(calls "$R")
expect_match "$c" '^--system daemon-reload$' "deb install: daemon-reload"
expect_no_match "$c" '(^|--quiet )(start|restart|try-restart)( |$)' "deb install: nothing started"
dpkg_root "$R" -i "$deb"
c=$(calls "$R")
expect_match "$c" '^--system daemon-reload$' "deb upgrade: daemon-reload"
expect_match "$c" '^try-restart accessd\.service$' "deb upgrade: restart the daemon"
expect_no_match "$c" 'accessd-boot\.service' "deb upgrade: boot unit (oneshot) not re-run"
expect_no_match "$c" '(^| )stop ' "deb upgrade: no stop"
dpkg_root "$R" -r accessd
c=$(calls "$R")
expect_match "$c" '^stop accessd\.service accessd-boot\.service$' "deb remove: stop both units"
expect_match "$c" '^--system daemon-reload$' "deb remove: daemon-reload"
dpkg_root "$R" -P accessd
c=$(calls "$R")
expect_no_match "$c" '(start|restart)( |$)' "deb purge: nothing started"

section "rpm scriptlets: image build (no systemd running), then a live system"
R=$(fake_systemd_root rpm)
rmdir "$R/run/systemd/system"
rpm_root() { rpm --root="$R" --nosignature --nodeps "$@" >"$tmp/rpm.log" 2>&1 || { cat "$tmp/rpm.log" >&2; fail "rpm --root $*"; }; }
rpm --root="$R" --initdb
rpm_root -i "$old_rpm"
expect_eq "$(calls "$R")" "--no-reload enable accessd.service accessd-boot.service" "rpm install without systemd: enable only"
expect_eq "$(mode_owner "$R/var/lib/accessd")" "700 root:root" "rpm: state dir"
expect_eq "$(mode_owner "$R/etc/accessd/accessd.toml")" "600 root:root" "rpm: config"
expect_eq "$(ls -A "$R/var/lib/accessd")" "" "rpm: no identity key before first start"
check_packaged_config "$R/etc/accessd/accessd.toml" rpm
mkdir -p "$R/run/systemd/system"
printf '\n# changed by the administrator\n' >>"$R/etc/accessd/accessd.toml"
cp -p "$R/etc/accessd/accessd.toml" "$tmp/changed-rpm.toml"
rpm_root -U "$rpm"
expect_eq "$(calls "$R")" "daemon-reload
daemon-reload
try-restart accessd.service" "rpm upgrade: reload (new %post, old %postun) and restart the daemon"
cmp -s "$R/etc/accessd/accessd.toml" "$tmp/changed-rpm.toml" || fail "rpm upgrade replaced the changed config"
ok
rpm_root -e accessd
expect_eq "$(calls "$R")" "stop accessd.service accessd-boot.service
--no-reload disable accessd.service accessd-boot.service
daemon-reload" "rpm erase: stop, disable, reload"
# RPM has no purge: a changed config is set aside, the state dir stays.
cmp -s "$R/etc/accessd/accessd.toml.rpmsave" "$tmp/changed-rpm.toml" || fail "rpm erase: changed config not kept as .rpmsave"
ok
for f in /usr/bin/accessd /usr/bin/accessctl /usr/lib/systemd/system/accessd.service /usr/lib/systemd/system/accessd-boot.service /etc/accessd/accessd.toml; do
  [ ! -e "$R$f" ] || fail "rpm erase left $f"
  ok
done

echo "packaging/test.sh: $checks checks passed"
