#!/usr/bin/env bash
# The boot suite (issue 13): accessd's .deb installed with dpkg inside a
# booted Debian container (systemd as PID 1, systemd-nspawn), driven with
# signed commands, and judged by what a user sees: real ssh/sshpass logins
# from this host, `sudo -n`, `sshd -T`, the journal, the files.
#
#   tests/boot/boot.sh [RELEASE...]     # default: bullseye bookworm trixie
#
# Prints one line per check ("ok   RELEASE: NAME" or "FAIL RELEASE: NAME",
# the failure followed by its evidence) and closes with "N passed, M failed";
# exits 1 when anything failed. tests/README.md ("Boot suite") says how to
# read the evidence and run one release alone.
#
# Safety (it runs as root on a shared machine): every container runs from a
# throwaway copy of a cached tree under a temp dir; its sshd listens on
# 127.0.0.1 and a free port only (the container shares the host's network);
# the MQTT broker is a mosquitto of ours on 127.0.0.1 and a free port. Nothing
# is written to this machine's /etc, no host service is touched, and only the
# processes this script started are killed, by pid.
#
# Environment:
#   ACCESSD_BOOT_CACHE     cached trees (default /var/cache/accessd-test; tests/boot/tree.sh)
#   ACCESSD_BOOT_EVIDENCE  where each check's log is kept (default target/boot-evidence)
#   ACCESSD_BOOT_KEEP=1    keep the container trees (under /tmp/accessd-boot.*) afterwards
#   ACCESSD_BOOT_DEBS=DIR  use DIR/new/*.deb and DIR/upgrade/*.deb instead of building
set -uo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)

releases=("$@")
[ ${#releases[@]} -gt 0 ] || releases=(bullseye bookworm trixie)

die() { echo "boot.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, systemd-nspawn, nsenter)"
for tool in systemd-nspawn nsenter debootstrap ssh sshpass ssh-keygen mosquitto python3 dpkg-deb; do
  command -v "$tool" >/dev/null || die "$tool is missing (scripts/install-test-deps installs it)"
done
[ -d /sys/fs/cgroup/unified ] && [ -d /sys/fs/cgroup/systemd ] \
  || die "needs the hybrid cgroup layout (/sys/fs/cgroup/unified and /sys/fs/cgroup/systemd)"

tmp=$(mktemp -d /tmp/accessd-boot.XXXXXX)
evidence_root=$(realpath -m "${ACCESSD_BOOT_EVIDENCE:-target/boot-evidence}")
mkdir -p "$evidence_root"

passed=0
failed=0
started_pids=()   # nspawn and mosquitto processes this script started
cgroups=()        # cgroups this script made

# kill_ours PID: SIGKILL PID only if it is still one of ours (a pid may have
# been reused since): its command line or its root is under $tmp.
kill_ours() {
  local p=$1 cmd root
  [ -n "$p" ] && [ -e "/proc/$p" ] || return 0
  cmd=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)
  root=$(readlink "/proc/$p/root" 2>/dev/null)
  case "$cmd|$root" in *"$tmp"*) kill -KILL "$p" 2>/dev/null ;; esac
  return 0
}

# kill_cgroup DIR: every process left in a cgroup this script made (only
# our containers run there), then the cgroup tree itself.
kill_cgroup() {
  local g=$1 i p
  [ -d "$g" ] || return 0
  for i in $(seq 1 20); do
    p=$(find "$g" -name cgroup.procs -exec cat {} + 2>/dev/null)
    [ -z "$p" ] && break
    # shellcheck disable=SC2086 # a list of pids
    kill -KILL $p 2>/dev/null
    sleep 0.25
  done
  find "$g" -depth -type d -exec rmdir {} \; 2>/dev/null
  return 0
}

cleanup() {
  local p g
  # boot() runs inside check subshells: what it starts is recorded in files.
  [ -f "$tmp/pids" ] && mapfile -t -O "${#started_pids[@]}" started_pids <"$tmp/pids"
  [ -f "$tmp/cgroups" ] && mapfile -t -O "${#cgroups[@]}" cgroups <"$tmp/cgroups"
  for p in "${started_pids[@]}"; do kill_ours "$p"; done
  for g in "${cgroups[@]}"; do kill_cgroup "$g"; done
  if [ "${ACCESSD_BOOT_KEEP:-}" = 1 ]; then
    echo "boot.sh: trees kept in $tmp" >&2
  else
    rm -rf "$tmp"
  fi
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------- packages
crate_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
upgrade_version="${crate_version}+boot1"
if [ -n "${ACCESSD_BOOT_DEBS:-}" ]; then
  deb=$(ls "$ACCESSD_BOOT_DEBS"/new/*.deb) up_deb=$(ls "$ACCESSD_BOOT_DEBS"/upgrade/*.deb)
else
  echo "boot.sh: building the packages (packaging/build.sh)" >&2
  # build.sh prints the .deb's path, then the .rpm's.
  built=$(packaging/build.sh --out "$tmp/pkg/new") || die "packaging/build.sh failed"
  deb=${built%%$'\n'*}
  built=$(packaging/build.sh --version "$upgrade_version" --out "$tmp/pkg/upgrade") \
    || die "packaging/build.sh --version $upgrade_version failed"
  up_deb=${built%%$'\n'*}
fi
[ -s "$deb" ] && [ -s "$up_deb" ] || die "no packages ($deb, $up_deb)"
deb_version=$(dpkg-deb -f "$deb" Version)
up_version=$(dpkg-deb -f "$up_deb" Version)
# The control plane's side runs the packaged accessctl, on this host.
mkdir -p "$tmp/x"
dpkg-deb -x "$deb" "$tmp/x"
ACCESSCTL=$tmp/x/usr/bin/accessctl

# ---------------------------------------------------------------- control plane keys, user keys
cp=$tmp/cp
mkdir -p "$cp"
"$ACCESSCTL" keygen --out "$cp/cp1" >/dev/null || die "accessctl keygen"
"$ACCESSCTL" keygen --out "$cp/cp2" >/dev/null || die "accessctl keygen"
for k in alice1 alice2 root1; do
  ssh-keygen -q -t ed25519 -N '' -C "boot-$k" -f "$cp/$k" || die "ssh-keygen"
done
# DSA: accepted by the agent with a warning; OpenSSH 10.0 (trixie) removed it.
ssh-keygen -q -t dsa -N '' -C boot-dsa -f "$cp/dsa1" || die "ssh-keygen -t dsa"
# Passwords the journal must never show (checked against every boot's journal).
PW_ALICE='Boot-Alice-7x!q'
PW_ROOT='Boot-Root-9z#w'
PW_BOB1='Bob-Now-3k$Lm'
PW_BOB2='Bob-Next-Boot-5t%R'

# ---------------------------------------------------------------- the MQTT broker (host, 127.0.0.1)
mqtt_port=$(free_port)
cat >"$tmp/mosquitto.conf" <<EOF
listener $mqtt_port 127.0.0.1
allow_anonymous true
persistence false
log_dest stderr
EOF
mosquitto -c "$tmp/mosquitto.conf" >"$tmp/mosquitto.log" 2>&1 &
started_pids+=($!)
disown

# ---------------------------------------------------------------- helpers used by checks
# Per release: R (the container's root on this host), S (state files),
# SSH_PORT, NAME, INSTANCE, and the leader pid in $S/leader.

# c CMD...: run CMD inside the booted container, all its namespaces, a clean
# environment, at most 120 s.
c() {
  timeout 120 nsenter -t "$(cat "$S/leader")" -a \
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 TERM=dumb "$@"
}
say() { echo "+ $*"; }
fail() { echo "FAILED: $*"; return 1; }
# expect_eq ACTUAL EXPECTED WHAT
expect_eq() { [ "$1" = "$2" ] || fail "$3: expected '$2', got '$1'"; }

boot() {
  local cg_u=/sys/fs/cgroup/unified/$NAME cg_s=/sys/fs/cgroup/systemd/$NAME
  mkdir -p "$cg_u" "$cg_s"
  printf '%s\n' "$cg_u" "$cg_s" >>"$tmp/cgroups"
  # The launching shell goes into cgroups of its own first: with
  # --keep-unit, nspawn makes the container's cgroup tree there.
  cat >"$S/launch.sh" <<EOF
#!/bin/sh
echo \$\$ > $cg_u/cgroup.procs
echo \$\$ > $cg_s/cgroup.procs
echo \$\$ > $S/nspawn
exec systemd-nspawn -q -D "$R" -b --register=no --keep-unit -M "$NAME" --console=read-only
EOF
  chmod 755 "$S/launch.sh"
  local nspawn="" leader="" i
  rm -f "$S/nspawn" "$S/leader"
  setsid "$S/launch.sh" >>"$S/console.log" 2>&1 </dev/null &
  for i in $(seq 1 100); do
    nspawn=$(cat "$S/nspawn" 2>/dev/null) && [ -n "$nspawn" ] && break
    sleep 0.1
  done
  [ -n "$nspawn" ] || fail "launch.sh did not start"
  echo "$nspawn" >>"$tmp/pids"
  for i in $(seq 1 100); do
    leader=$(pgrep -P "$nspawn" | head -n 1) || true
    [ -n "$leader" ] && [ "$(cat "/proc/$leader/comm" 2>/dev/null)" = systemd ] && break
    leader=""
    sleep 0.2
  done
  [ -n "$leader" ] || { tail -n 20 "$S/console.log"; fail "no systemd leader under nspawn $nspawn"; return 1; }
  echo "$leader" >"$S/leader"
  echo "$leader" >>"$tmp/pids"
  # Until boot is finished (running or degraded); systemctl cannot reach
  # PID 1 in its first moments, and --wait does not wait for that.
  local state=""
  for i in $(seq 1 120); do
    state=$(c systemctl is-system-running --wait 2>&1) || true
    case "$state" in running|degraded|maintenance|stopping) break ;; esac
    sleep 0.5
  done
  say "leader $leader, system: $state"
  if [ "$state" != running ]; then
    c systemctl --failed --no-pager --no-legend
    fail "system is '$state', not running"
  fi
}

container_poweroff() {
  local nspawn i
  nspawn=$(cat "$S/nspawn")
  c systemctl poweroff >/dev/null 2>&1
  for i in $(seq 1 300); do
    kill -0 "$nspawn" 2>/dev/null || return 0
    sleep 0.2
  done
  fail "container did not power off within 60 s"
}

# sign NAME OP ARGS...: a command (OP is accessctl's subcommand: add-keys,
# set-sshd...) with id boot-RELEASE-NAME, signed by cp1 (or KEY=cp2 before
# the call), written to $R/var/tmp/cmds/NAME.json. A password given with
# --password-stdin is sealed to the agent's key.
sign() {
  local name=$1 op=$2 a seal=(); shift 2
  for a in "$@"; do [ "$a" = --password-stdin ] && seal=(--agent-key "$(cat "$S/agent.pub")"); done
  mkdir -p "$R/var/tmp/cmds"
  "$ACCESSCTL" sign "$op" --key "$cp/${KEY:-cp1}.key" --key-id "${KEY:-cp1}" --instance "$INSTANCE" \
    --id "boot-$REL-$name" "${seal[@]}" "$@" --out "$R/var/tmp/cmds/$name.json"
}
# send NAME: deliver a signed command through the inbox with the packaged
# accessctl inside the container; the verified result goes to $S/res/NAME.json.
send() {
  local name=$1 rc
  mkdir -p "$S/res"
  c accessctl send --inbox /var/lib/accessd/inbox --agent-key "$(cat "$S/agent.pub")" --timeout 60s \
    "/var/tmp/cmds/$name.json" >"$S/res/$name.json" && rc=0 || rc=$?
  say "result of $name (exit $rc): $(cat "$S/res/$name.json")"
  return 0
}
# field NAME KEY: a top-level field of a result (data.* with a dotted key).
field() {
  python3 - "$S/res/$1.json" "$2" <<'EOF'
import json, sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."):
    v = v.get(k) if isinstance(v, dict) else None
print(v if not isinstance(v, (dict, list)) else json.dumps(v))
EOF
}
# run NAME EXPECTED_STATUS [EXPECTED_CODE] OP SIGN-ARGS...: sign, send,
# check. A result code has a '_' (unknown_key) or is one word the ops are
# not; ops are dashed (add-keys).
run() {
  local name=$1 want=$2 code=ok; shift 2
  case "${1:-}" in *_*|ok|expired|replayed) code=$1; shift ;; esac
  sign "$name" "$@" || fail "accessctl sign $name"
  send "$name"
  expect_eq "$(field "$name" status) $(field "$name" code)" "$want $code" "$name result"
}

SSH_OPTS=(-F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
  -o ConnectTimeout=20 -o ServerAliveInterval=5 -o ServerAliveCountMax=3)
# ssh_key USER KEY [CMD]: a key-only login from this host; prints CMD's output (default: id -un).
ssh_key() {
  ssh "${SSH_OPTS[@]}" -o BatchMode=yes -o IdentitiesOnly=yes -o PreferredAuthentications=publickey \
    -i "$cp/$2" -p "$SSH_PORT" "$1@127.0.0.1" "${3:-id -un}" 2>&1
}
# ssh_pw USER PASSWORD: a password-only login (sshpass reads SSHPASS).
ssh_pw() {
  SSHPASS=$2 sshpass -e ssh "${SSH_OPTS[@]}" -o PubkeyAuthentication=no -o PreferredAuthentications=password \
    -o NumberOfPasswordPrompts=1 -p "$SSH_PORT" "$1@127.0.0.1" id -un 2>&1
}
login_ok() {   # login_ok USER key KEY | login_ok USER pw PASSWORD
  local out
  if [ "$2" = key ]; then out=$(ssh_key "$1" "$3") || true; else out=$(ssh_pw "$1" "$3") || true; fi
  say "login $1 by $2: $out"
  [ "$out" = "$1" ] || fail "$1 could not log in by $2 (got: $out)"
  # Every hash a password login proved is a secret the journal must not show.
  [ "$2" = key ] || shadow_hash "$1" >>"$S/hashes"
}
login_refused() {
  local out rc
  if [ "$2" = key ]; then out=$(ssh_key "$1" "$3") && rc=0 || rc=$?; else out=$(ssh_pw "$1" "$3") && rc=0 || rc=$?; fi
  say "login $1 by $2 (expect refusal): exit $rc: $out"
  [ $rc -ne 0 ] && [ "$out" != "$1" ] || fail "$1 logged in by $2, expected a refusal"
  # A refusal must be sshd's, not a dead sshd: the port must answer.
  printf '%s' "$out" | grep -q -e 'Permission denied' -e 'Connection closed' -e 'Authentication failed' \
    || fail "not an authentication refusal: $out"
}
sshd_T() { c sshd -T -C user=root,host=localhost,addr=127.0.0.1 | grep -i "^$1 " | awk '{print $2}'; }
shadow_hash() { awk -F: -v u="$1" '$1 == u { print $2 }' "$R/etc/shadow"; }
main_pid() { c systemctl show -p MainPID --value accessd.service; }
# wait_active UNIT: until active (Restart= timers) or 40 s.
wait_active() {
  local i
  for i in $(seq 1 80); do
    [ "$(c systemctl is-active "$1")" = active ] && return 0
    sleep 0.5
  done
  c systemctl status --no-pager "$1"
  fail "$1 is not active"
}

# check NAME FUNCTION: run FUNCTION in a subshell with -e, its output kept as
# the check's evidence; print one line; on failure, the evidence's tail.
check() {
  local name=$1 fn=$2 log rc
  checkno=$((checkno + 1))
  log="$EVIDENCE/$(printf '%02d' "$checkno")-${name//[^A-Za-z0-9._-]/_}.log"
  local t0=$SECONDS
  ( set -e; "$fn" ) >"$log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then
    passed=$((passed + 1))
    echo "ok   $REL: $name ($((SECONDS - t0))s)"
  else
    failed=$((failed + 1))
    echo "FAIL $REL: $name ($((SECONDS - t0))s) — evidence: $log"
    tail -n 25 "$log" | sed 's/^/    | /'
  fi
  return 0
}

# ---------------------------------------------------------------- the checks
ck_boot() {
  boot
}

ck_dpkg_install() {
  say "dpkg -i $(basename "$deb") inside the booted container"
  c dpkg -i "/var/tmp/$(basename "$deb")"
  expect_eq "$(c dpkg-query -W -f '${Status} ${Version}' accessd)" "install ok installed $deb_version" "dpkg status"
  # Enabled for the next boot, nothing started (no trusted key yet).
  expect_eq "$(c systemctl is-enabled accessd.service)" enabled "accessd.service enabled"
  expect_eq "$(c systemctl is-enabled accessd-boot.service)" enabled "accessd-boot.service enabled"
  expect_eq "$(c systemctl is-active accessd.service)" inactive "accessd.service not started on install"
}

ck_binaries_run() {
  # The release binaries on this release's glibc (issue 13: GLIBC_2.32 not found on bullseye).
  c ldd --version >"$S/ldd.txt"
  head -n 1 "$S/ldd.txt"
  c accessd --version
  c accessctl --version
}

ck_start_notify() {
  # Trust cp1, name the instance. The packaged config trusts nothing.
  local conf="$R/etc/accessd/accessd.toml"
  sed -i "s/^instance_id = .*/instance_id = \"$INSTANCE\"/" "$conf"
  sed -i "s|^\[trust\]\$|[trust]\ncp1 = \"$(cat "$cp/cp1.pub")\"|" "$conf"
  grep -n -e '^instance_id' -e '^cp1' "$conf"
  c accessd identity --config /etc/accessd/accessd.toml >"$S/agent.pub"
  say "agent key $(cat "$S/agent.pub")"
  expect_eq "$(c systemctl show -p Type --value accessd.service)" notify "Type"
  # A command waiting in the inbox before the daemon starts must be answered
  # by the time `systemctl start` returns (READY=1 comes after the backlog).
  sign waiting inventory
  install -d -m 0700 "$R/var/lib/accessd/inbox"
  cp "$R/var/tmp/cmds/waiting.json" "$R/var/lib/accessd/inbox/.000-waiting.json"
  mv "$R/var/lib/accessd/inbox/.000-waiting.json" "$R/var/lib/accessd/inbox/000-waiting.json"
  c systemctl start accessd.service
  ls -la "$R/var/lib/accessd/inbox" "$R/var/lib/accessd/outbox"
  [ -s "$R/var/lib/accessd/outbox/000-waiting.json" ] || fail "no result for the waiting command when start returned"
  [ ! -e "$R/var/lib/accessd/inbox/000-waiting.json" ] || fail "waiting command still in the inbox when start returned"
  "$ACCESSCTL" verify-result --agent-key "$(cat "$S/agent.pub")" "$R/var/lib/accessd/outbox/000-waiting.json" >"$S/res/waiting.json" \
    || fail "result does not verify"
  cat "$S/res/waiting.json"
  expect_eq "$(field waiting status)" ok "waiting command status"
  expect_eq "$(c systemctl is-active accessd.service)" active "accessd active"
}

ck_create_user_sudo() {
  run create_alice ok create-user --user alice --sudo --key-file "$cp/alice1.pub"
  login_ok alice key alice1
  # sudo -n: the grant works without a password prompt (alice has none).
  local out
  out=$(ssh_key alice alice1 'sudo -n id -un')
  say "sudo -n id -un as alice: $out"
  expect_eq "$(printf '%s\n' "$out" | tail -n 1)" root "sudo -n as alice"
}

ck_set_password() {
  printf '%s' "$PW_ALICE" | sign pw_alice set-password --user alice --password-stdin
  send pw_alice
  expect_eq "$(field pw_alice status)" ok "set_password"
  login_ok alice pw "$PW_ALICE"
  login_refused alice pw "Wrong-Pass-1x!"
}

ck_root_prohibit_password() {
  run root_key ok add-keys --user root --key-file "$cp/root1.pub"
  printf '%s' "$PW_ROOT" | sign pw_root set-password --user root --password-stdin
  send pw_root
  expect_eq "$(field pw_root status)" ok "set_password root"
  run sshd_prohibit ok set-sshd --permit-root-login prohibit-password
  say "sshd -T permitrootlogin: $(sshd_T permitrootlogin)"
  case "$(sshd_T permitrootlogin)" in
    prohibit-password|without-password) ;;
    *) fail "sshd -T permitrootlogin is $(sshd_T permitrootlogin)" ;;
  esac
  login_ok root key root1
  login_refused root pw "$PW_ROOT"
}

ck_set_sshd_password_off() {
  run sshd_pw_off ok set-sshd --password-auth no
  expect_eq "$(sshd_T passwordauthentication)" no "sshd -T passwordauthentication"
  login_refused alice pw "$PW_ALICE"
  login_ok alice key alice1
  run sshd_pw_on ok set-sshd --password-auth yes
  expect_eq "$(sshd_T passwordauthentication)" yes "sshd -T passwordauthentication"
  login_ok alice pw "$PW_ALICE"
}

ck_set_sshd_pubkey_off() {
  run sshd_pk_off ok set-sshd --pubkey-auth no
  expect_eq "$(sshd_T pubkeyauthentication)" no "sshd -T pubkeyauthentication"
  login_refused alice key alice1
  run sshd_pk_on ok set-sshd --pubkey-auth yes
  expect_eq "$(sshd_T pubkeyauthentication)" yes "sshd -T pubkeyauthentication"
  login_ok alice key alice1
}

ck_replace_keys() {
  run replace_alice ok replace-keys --user alice --key-file "$cp/alice2.pub"
  login_ok alice key alice2
  login_refused alice key alice1
}

ck_remove_keys() {
  local fp
  fp=$(ssh-keygen -l -E sha256 -f "$cp/alice2.pub" | awk '{print $2}')
  run remove_alice ok remove-keys --user alice --fingerprint "$fp"
  login_refused alice key alice2
  login_ok alice pw "$PW_ALICE"
}

ck_dsa_key() {
  run dsa_root ok add-keys --user root --key-file "$cp/dsa1.pub"
  grep -q 'ssh-dss' "$S/res/dsa_root.json" || fail "no ssh-dss warning in the result"
  grep -q '^ssh-dss ' "$R/root/.ssh/authorized_keys" || fail "the DSA key is not in root's authorized_keys"
  c sshd -t
  say "sshd -T pubkeyacceptedalgorithms: $(sshd_T pubkeyacceptedalgorithms)"
  # sshd refuses it (disabled by default since 7.0, gone in 10.0); the
  # client is told to offer it anyway.
  local out rc
  out=$(ssh "${SSH_OPTS[@]}" -o BatchMode=yes -o IdentitiesOnly=yes -o PreferredAuthentications=publickey \
    -o PubkeyAcceptedAlgorithms=+ssh-dss -i "$cp/dsa1" -p "$SSH_PORT" root@127.0.0.1 id -un 2>&1) && rc=0 || rc=$?
  say "login root by DSA key: exit $rc: $out"
  [ $rc -ne 0 ] && [ "$out" != root ] || fail "sshd accepted a DSA key"
  login_ok root key root1
}

ck_inventory() {
  run inventory ok inventory
  python3 - "$S/res/inventory.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
users = {u["name"]: u for u in r["data"]["users"]}
assert "alice" in users and "root" in users, f"users: {sorted(users)}"
print("alice:", json.dumps(users["alice"]))
assert users["alice"]["sudo"] is True, "alice has sudo"
assert len(users["root"]["keys"]) >= 1, "root's key listed"
EOF
}

ck_restart_sshd_starts_stopped() {
  c systemctl stop ssh.service
  expect_eq "$(c systemctl is-active ssh.service)" inactive "ssh stopped before the command"
  run restart_sshd ok restart-sshd
  c systemctl status --no-pager ssh.service | head -n 5 || true
  expect_eq "$(c systemctl is-active ssh.service)" active "ssh running after restart_sshd"
  login_ok root key root1
}

ck_hardening() {
  local pid status want have mnt
  # MainPID is a pid of the container's namespace: read /proc from inside.
  pid=$(main_pid)
  say "accessd MainPID $pid"
  status=$(c cat "/proc/$pid/status")
  printf '%s\n' "$status" | grep -e '^Cap' -e '^NoNewPrivs'
  # Bounding set: exactly the capabilities the installed unit names.
  have=$(c capsh --decode="$(printf '%s\n' "$status" | awk '/^CapBnd:/ {print $2}')" | sed 's/.*=//')
  want=$(sed -n 's/^CapabilityBoundingSet=//p' "$R/lib/systemd/system/accessd.service" | tr ' ' '\n' | tr 'A-Z' 'a-z' | grep . | sort | paste -sd,)
  say "CapBnd decodes to $have; the unit says $want"
  [ -n "$want" ] || fail "no CapabilityBoundingSet= in the installed accessd.service"
  expect_eq "$(printf '%s\n' "$have" | tr ',' '\n' | sort | paste -sd,)" "$want" "bounding set"
  expect_eq "$(printf '%s\n' "$status" | awk '/^NoNewPrivs:/ {print $2}')" 1 "NoNewPrivs"
  # ProtectSystem=strict: / is mounted read-only in the daemon's namespace.
  c cat "/proc/$pid/mountinfo" >"$S/mountinfo"
  mnt=$(awk '$5 == "/" { print $6 }' "$S/mountinfo" | tail -n 1)
  say "/ in accessd's mount namespace: $mnt"
  case ",$mnt," in *,ro,*) ;; *) fail "/ is not read-only for accessd ($mnt)" ;; esac
  if c nsenter -t "$pid" -m touch /usr/.accessd-boot-probe 2>"$S/probe.err"; then
    rm -f "$R/usr/.accessd-boot-probe"; fail "/usr writable in accessd's namespace"
  fi
  say "write to /usr in accessd's namespace: $(cat "$S/probe.err")"
  echo "note: MemoryMax=/TasksMax= are not enforced in this container (nspawn on hybrid cgroups); not checked"
}

ck_journal_fields() {
  local id="boot-$REL-create_alice"
  c journalctl --no-pager -o json "COMMAND_ID=$id" >"$S/journal-create.json"
  python3 - "$S/journal-create.json" "$id" <<'EOF'
import json, sys
events = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert events, "journalctl COMMAND_ID found nothing"
need = ["COMMAND_ID", "OP", "TARGET_USER", "RESULT_CODE", "SOURCE", "MESSAGE_ID"]
applied = "8e3b2d7c1a6f4e0b9c5d3a2f1e7b6c42"
for e in events:
    print({k: e.get(k) for k in need + ["MESSAGE", "_SYSTEMD_UNIT"]})
ok = [e for e in events if e.get("MESSAGE_ID") == applied]
assert ok, "no 'applied' event (MESSAGE_ID %s)" % applied
for e in ok:
    missing = [k for k in need if not e.get(k)]
    assert not missing, f"applied event lacks {missing}"
    assert e["OP"] == "create_user" and e["TARGET_USER"] == "alice" and e["RESULT_CODE"] == "ok", e
    assert e["COMMAND_ID"] == sys.argv[2]
EOF
}

# No password, hash or sealed box in any journal entry of any boot so far.
ck_no_secret_in_journal() {
  local secrets=("$PW_ALICE" "$PW_ROOT" "$PW_BOB1" "$PW_BOB2") h f n=0
  for u in root bob; do shadow_hash "$u" >>"$S/hashes"; done
  while read -r h; do
    case "$h" in '$'*) secrets+=("$h") ;; esac
  done < <(sort -u "$S/hashes")
  for f in "$R"/var/tmp/cmds/pw_*.json "$R"/var/tmp/cmds/bob_*.json; do
    [ -f "$f" ] || continue
    # the sealed box inside the signed payload
    secrets+=("$(python3 -c 'import json,sys,base64; e=json.load(open(sys.argv[1])); p=json.loads(base64.b64decode(e["payload"])); print(p["args"]["password"].get("sealed") or p["args"]["password"].get("crypt"))' "$f")")
  done
  c journalctl --no-pager -o export >"$S/journal.export"
  say "journal: $(wc -c <"$S/journal.export") bytes, $(grep -c '^__CURSOR=' "$S/journal.export") entries; ${#secrets[@]} secrets looked for"
  for s in "${secrets[@]}"; do
    [ -n "$s" ] && [ "$s" != None ] || continue
    n=$((n + 1))
    if grep -aF -q -- "$s" "$S/journal.export"; then
      grep -aF -- "$s" "$S/journal.export" | head -n 3 | cut -c1-200
      fail "a secret (#$n, ${#s} chars) is in the journal"
    fi
  done
  [ $n -ge 4 ] || fail "only $n secrets to look for"
}

ck_reload() {
  local conf="$R/etc/accessd/accessd.toml"
  cp -p "$conf" "$S/accessd.toml.good"
  sed -i "s|^cp1 = .*|&\ncp2 = \"$(cat "$cp/cp2.pub")\"|" "$conf"
  grep -n '^cp' "$conf"
  # Before the reload the new key is unknown...
  KEY=cp2 run cp2_before rejected unknown_key inventory
  c systemctl reload accessd.service
  # ...after it, trusted.
  KEY=cp2 run cp2_after ok inventory
  # A config that does not load keeps the running one (and the daemon).
  printf '\n[[[ not toml\n' >>"$conf"
  c systemctl reload accessd.service
  sleep 1
  expect_eq "$(c systemctl is-active accessd.service)" active "accessd after a broken reload"
  KEY=cp2 run cp2_broken ok inventory
  c journalctl --no-pager -u accessd.service -n 5 -o cat
  # Back to the good config (cp1 only), reloaded.
  cp -p "$S/accessd.toml.good" "$conf"
  c systemctl reload accessd.service
  KEY=cp2 run cp2_removed rejected unknown_key inventory
}

# PROTOCOL §6: COMMAND_ID only once the signature verified; the id an
# unverified envelope claims goes in CLAIMED_COMMAND_ID. cp2_before was
# signed by a key the agent did not trust yet (unknown_key).
ck_journal_claimed_id() {
  local id="boot-$REL-cp2_before"
  c journalctl --no-pager -o json "CLAIMED_COMMAND_ID=$id" >"$S/journal-claimed.json"
  c journalctl --no-pager -o json "COMMAND_ID=$id" >"$S/journal-unverified.json"
  python3 - "$S/journal-claimed.json" "$S/journal-unverified.json" <<'EOF'
import json, sys
claimed = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
as_verified = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
for e in claimed + as_verified:
    print({k: e.get(k) for k in ["COMMAND_ID", "CLAIMED_COMMAND_ID", "OP", "RESULT_CODE", "MESSAGE_ID", "MESSAGE"]})
assert not as_verified, "an unverified command's id is logged as COMMAND_ID"
assert claimed, "no CLAIMED_COMMAND_ID event for the rejected command"
assert any(e.get("RESULT_CODE") == "unknown_key" for e in claimed), "no unknown_key event"
EOF
}

ck_lock_unlock() {
  run alice_key_back ok add-keys --user alice --key-file "$cp/alice1.pub"
  login_ok alice key alice1
  run lock_alice ok lock-user --user alice
  expect_eq "$(awk -F: '$1 == "alice" { print $8 }' "$R/etc/shadow")" 1 "alice's account expiry after lock_user"
  # An expired account is dropped by sshd without a "Permission denied"
  # (PAM's account stage): refused is "did not get in", and another
  # login right after proves sshd was there to refuse.
  local out
  out=$(ssh_key alice alice1) && fail "alice logged in by key while locked: $out"
  say "locked alice by key: $out"
  out=$(ssh_pw alice "$PW_ALICE") && fail "alice logged in by password while locked: $out"
  say "locked alice by password: $out"
  login_ok root key root1
  run unlock_alice ok unlock-user --user alice
  login_ok alice key alice1
  login_ok alice pw "$PW_ALICE"
}

ck_set_sudo() {
  local out
  run sudo_off ok set-sudo --user alice --grant-sudo no
  out=$(c sudo -l -U alice 2>&1 || true)
  say "sudo -l -U alice after the revoke: $out"
  printf '%s' "$out" | grep -q 'is not allowed to run sudo' || fail "sudo -l -U alice still grants after set_sudo no"
  out=$(ssh_key alice alice1 'sudo -n id -un' || true)
  say "sudo -n id -un as alice after the revoke: $out"
  [ "$(printf '%s\n' "$out" | tail -n 1)" != root ] || fail "sudo -n still works after set_sudo no"
  run sudo_on ok set-sudo --user alice --grant-sudo yes
  out=$(c sudo -l -U alice 2>&1 || true)
  say "sudo -l -U alice after the grant: $out"
  printf '%s' "$out" | grep -q 'may run the following commands' || fail "sudo -l -U alice does not grant after set_sudo yes"
}

ck_key_expiry() {
  local at
  at=$(date -u -d '+8 seconds' +%Y-%m-%dT%H:%M:%SZ)
  run alice_expiring ok add-keys --user alice --key-file "$cp/alice2.pub" --keys-expire-at "$at"
  grep -n 'expiry-time' "$R/home/alice/.ssh/authorized_keys" || fail "no expiry-time option written"
  login_ok alice key alice2
  sleep 11
  login_refused alice key alice2
  ! grep -q "$(awk '{print $2}' "$cp/alice2.pub")" "$R/home/alice/.ssh/authorized_keys" \
    || fail "the expired key's line is still in authorized_keys"
  login_ok alice key alice1
}

ck_delete_user() {
  run delete_alice ok delete-user --user alice --remove-home
  login_refused alice pw "$PW_ALICE"
  [ ! -e "$R/home/alice" ] || fail "/home/alice left"
  ! grep -q '^alice:' "$R/etc/passwd" || fail "alice still in /etc/passwd"
  [ ! -e "$R/etc/sudoers.d/alice" ] || fail "alice's sudoers drop-in left"
}

ck_nextboot_staged() {
  run create_bob ok create-user --user bob
  printf '%s' "$PW_BOB1" | sign bob_pw1 set-password --user bob --password-stdin
  send bob_pw1
  expect_eq "$(field bob_pw1 status)" ok "bob's first password"
  login_ok bob pw "$PW_BOB1"
  printf '%s' "$PW_BOB2" | sign bob_next set-password --user bob --password-stdin --next-boot
  send bob_next
  expect_eq "$(field bob_next status)" ok "next-boot password staged"
  shadow_hash bob >"$S/bob.hash1"
  ls -la "$R/var/lib/accessd/staged"
  (cd "$R/var/lib/accessd/staged" && find . -type f | sort | xargs sha256sum) >"$S/staged.list"
  [ -s "$S/staged.list" ] || fail "nothing staged"
}
# The staged password must stay staged: shadow and logins as before.
bob_unchanged() {
  c journalctl --no-pager -u accessd-boot.service -o cat | tail -n 5
  expect_eq "$(shadow_hash bob)" "$(cat "$S/bob.hash1")" "bob's shadow hash ($1)"
  login_ok bob pw "$PW_BOB1"
  login_refused bob pw "$PW_BOB2"
}
ck_nextboot_not_on_restart() {
  c systemctl restart accessd.service
  bob_unchanged "after systemctl restart accessd"
}
ck_nextboot_not_on_crash() {
  local old new i
  old=$(main_pid)
  say "SIGKILL accessd (MainPID $old); Restart=on-failure brings it back"
  c kill -KILL "$old"
  for i in $(seq 1 60); do
    new=$(main_pid)
    [ "$new" != 0 ] && [ "$new" != "$old" ] && [ "$(c systemctl is-active accessd.service)" = active ] && break
    sleep 0.5
  done
  say "MainPID now $new, $(c systemctl show -p NRestarts accessd.service)"
  [ "$new" != 0 ] && [ "$new" != "$old" ] || fail "accessd was not restarted after SIGKILL"
  bob_unchanged "after SIGKILL + Restart=on-failure"
}
ck_upgrade_keeps_state() {
  local conf="$R/etc/accessd/accessd.toml"
  cp -p "$conf" "$S/conf.before"
  c dpkg -i "/var/tmp/$(basename "$up_deb")"
  expect_eq "$(c dpkg-query -W -f '${Version}' accessd)" "$up_version" "upgraded version"
  wait_active accessd.service
  cmp "$conf" "$S/conf.before" || fail "config changed by the upgrade"
  expect_eq "$(c accessd identity --config /etc/accessd/accessd.toml)" "$(cat "$S/agent.pub")" "identity"
  # The replay set: the create_user command sent again is refused as replayed.
  cp "$R/var/tmp/cmds/create_bob.json" "$R/var/tmp/cmds/create_bob_again.json"
  send create_bob_again
  expect_eq "$(field create_bob_again code)" replayed "create_bob sent again after the upgrade"
  expect_eq "$( (cd "$R/var/lib/accessd/staged" && find . -type f | sort | xargs sha256sum) )" "$(cat "$S/staged.list")" "staged entries"
  bob_unchanged "after the package upgrade"
}
ck_reboot_applies_staged() {
  container_poweroff
  boot
  c systemctl show -p Result -p ExecMainStatus -p ExecMainExitTimestampMonotonic accessd-boot.service
  c systemctl show -p ExecMainStartTimestampMonotonic ssh.service
  expect_eq "$(c systemctl show -p Result --value accessd-boot.service)" success "accessd-boot result"
  local done_at ssh_at
  done_at=$(c systemctl show -p ExecMainExitTimestampMonotonic --value accessd-boot.service)
  ssh_at=$(c systemctl show -p ExecMainStartTimestampMonotonic --value ssh.service)
  [ "${done_at:-0}" -gt 0 ] && [ "${ssh_at:-0}" -gt 0 ] || fail "no timestamps ($done_at, $ssh_at)"
  [ "$done_at" -le "$ssh_at" ] || fail "accessd-boot finished at $done_at, after ssh.service started at $ssh_at"
  c journalctl --no-pager -b -u accessd-boot.service -o cat
  [ "$(shadow_hash bob)" != "$(cat "$S/bob.hash1")" ] || fail "bob's hash unchanged after the reboot"
  login_ok bob pw "$PW_BOB2"
  login_refused bob pw "$PW_BOB1"
  # The whole story of the staged command: staged in boot 1, applied in boot 2.
  c journalctl --no-pager -o json "COMMAND_ID=boot-$REL-bob_next" >"$S/journal-next.json"
  python3 - "$S/journal-next.json" <<'EOF'
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for e in ev:
    print(e.get("_BOOT_ID"), e.get("_SYSTEMD_UNIT"), e.get("MESSAGE_ID"), e.get("RESULT_CODE"), e.get("MESSAGE"))
boots = {e.get("_BOOT_ID") for e in ev}
assert len(boots) >= 2, f"events from {len(boots)} boot(s), expected the staging boot and the applying boot"
assert any(e.get("_SYSTEMD_UNIT") == "accessd-boot.service" and e.get("RESULT_CODE") == "ok" for e in ev), \
    "no ok event from accessd-boot.service"
EOF
  [ -z "$(ls -A "$R/var/lib/accessd/staged" 2>/dev/null)" ] || fail "staged entries left after applying"
}

ck_mqtt_round_trip() {
  local conf="$R/etc/accessd/accessd.toml"
  printf '\n[mqtt]\nurl = "mqtt://127.0.0.1:%s"\n' "$mqtt_port" >>"$conf"
  c systemctl restart accessd.service
  sign mqtt_inv inventory
  mkdir -p "$S/res"
  "$ACCESSCTL" send --mqtt "mqtt://127.0.0.1:$mqtt_port" --instance "$INSTANCE" \
    --agent-key "$(cat "$S/agent.pub")" --timeout 60s "$R/var/tmp/cmds/mqtt_inv.json" >"$S/res/mqtt_inv.json"
  cat "$S/res/mqtt_inv.json"
  expect_eq "$(field mqtt_inv status)" ok "inventory over MQTT"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert "bob" in [u["name"] for u in r["data"]["users"]], r["data"]' "$S/res/mqtt_inv.json"
}

ck_image_reset() {
  c systemctl stop accessd.service
  rm -rf "$R/var/lib/accessd"
  c systemctl start accessd.service
  local new
  new=$(c accessd identity --config /etc/accessd/accessd.toml)
  say "identity before $(cat "$S/agent.pub"), after the reset $new"
  [ -n "$new" ] && [ "$new" != "$(cat "$S/agent.pub")" ] || fail "the reset did not give a new identity"
  printf '%s\n' "$new" >"$S/agent.pub"
  # A command sent before the reset is new to the reset agent, and answered
  # under the new key (send verifies with it).
  run after_reset ok inventory
}

ck_purge() {
  c dpkg -P accessd
  expect_eq "$(c dpkg-query -W -f '${Status}' accessd 2>/dev/null || true)" "" "dpkg database"
  local left
  # What commands changed on the machine (sshd's 00-accessd.conf drop-in and
  # its backups) is the administrator's configuration now, not the
  # package's: purging the agent must not silently change who can log in.
  left=$(cd "$R" && find . -xdev \( -path ./var/lib/dpkg -o -path ./var/log -o -path ./var/tmp -o -path ./proc -o -path ./sys -o -path ./run \) -prune \
    -o -name '*accessd*' -print | grep -v '^\./etc/ssh/sshd_config\.d/00-accessd\.conf' || true)
  say "sshd drop-ins kept: $(ls "$R/etc/ssh/sshd_config.d" | paste -sd' ')"
  say "files named *accessd* after purge: ${left:-none}"
  [ -z "$left" ] || fail "purge left: $left"
  [ ! -e "$R/etc/accessd" ] && [ ! -e "$R/var/lib/accessd" ] || fail "purge left /etc/accessd or /var/lib/accessd"
  expect_eq "$(c systemctl show -p LoadState --value accessd.service)" not-found "accessd.service after purge"
  ! c pgrep -x accessd || fail "an accessd process still runs"
}

# ---------------------------------------------------------------- per release
summary=()
for REL in "${releases[@]}"; do
  t_rel=$SECONDS
  checkno=0
  # Unique per run: the cgroups and the machine name are named after it.
  NAME=accessd-boot-$REL-$$
  INSTANCE=i-boot-$REL
  S=$tmp/$REL/state
  R=$tmp/$REL/root
  EVIDENCE=$evidence_root/$REL
  rm -rf "$EVIDENCE"
  mkdir -p "$S/res" "$R" "$EVIDENCE"
  p0=$passed f0=$failed
  tar_path=$(tests/boot/tree.sh "$REL") || { failed=$((failed + 1)); echo "FAIL $REL: container tree (tests/boot/tree.sh $REL)"; continue; }
  tar -C "$R" --numeric-owner -xf "$tar_path"
  SSH_PORT=$(free_port)
  # The container shares this host's network: its sshd listens on 127.0.0.1
  # and a free port only. Like a cloud image, a cloud-init drop-in turns
  # password logins on (set_sshd must win over it).
  printf 'ListenAddress 127.0.0.1:%s\n' "$SSH_PORT" >"$R/etc/ssh/sshd_config.d/00-boot-listen.conf"
  # OpenSSH 9.8+ (sshd-session appeared with it) penalises an address that
  # fails to authenticate; the checks fail logins from 127.0.0.1 on purpose
  # and must not be locked out by it (older sshd refuses the keyword).
  if [ -e "$R/usr/lib/openssh/sshd-session" ]; then
    printf 'PerSourcePenalties no\n' >>"$R/etc/ssh/sshd_config.d/00-boot-listen.conf"
  fi
  printf 'PasswordAuthentication yes\n' >"$R/etc/ssh/sshd_config.d/50-cloud-init.conf"
  grep -q '^Include /etc/ssh/sshd_config.d/\*.conf' "$R/etc/ssh/sshd_config" \
    || sed -i '1i Include /etc/ssh/sshd_config.d/*.conf' "$R/etc/ssh/sshd_config"
  echo "$NAME" >"$R/etc/hostname"
  # As a cloud image has it: sudo resolves its own host name.
  printf '127.0.1.1\t%s\n' "$NAME" >>"$R/etc/hosts"
  mkdir -p "$R/var/log/journal"          # persistent: every boot stays readable
  cp "$deb" "$up_deb" "$R/var/tmp/"
  echo "== $REL: container $NAME, sshd on 127.0.0.1:$SSH_PORT, mosquitto on 127.0.0.1:$mqtt_port"

  check "boot: systemd reaches running" ck_boot
  if [ "$failed" -gt "$f0" ]; then
    echo "FAIL $REL: the container did not boot; no further checks"
    summary+=("$REL: did not boot")
    continue
  fi
  check "dpkg -i installs and enables, starts nothing" ck_dpkg_install
  check "packaged binaries run on this glibc" ck_binaries_run
  check "systemctl start: Type=notify, a waiting inbox file answered when start returns" ck_start_notify
  check "create_user --sudo: key login, sudo -n" ck_create_user_sudo
  check "set_password: password login" ck_set_password
  check "add_keys root + set_sshd prohibit-password: root key yes, root password no" ck_root_prohibit_password
  check "set_sshd password_authentication no/yes: refused, then accepted (sshd -T)" ck_set_sshd_password_off
  check "set_sshd pubkey_authentication no/yes: refused, then accepted (sshd -T)" ck_set_sshd_pubkey_off
  check "replace_keys: new key in, old key out" ck_replace_keys
  check "remove_keys by fingerprint: key refused" ck_remove_keys
  check "add_keys ssh-dss: accepted with a warning, sshd refuses it, other keys work" ck_dsa_key
  check "inventory lists users, sudo, keys" ck_inventory
  check "restart_sshd starts a stopped ssh.service" ck_restart_sshd_starts_stopped
  # Whatever that check found, the later checks need a running sshd.
  c systemctl start ssh.service >/dev/null 2>&1 || true
  check "hardening in force: bounding set, NoNewPrivileges, read-only /" ck_hardening
  check "journalctl COMMAND_ID: every documented field" ck_journal_fields
  check "systemctl reload: new key only after it; a broken config keeps the old" ck_reload
  check "journal: an unverified command's id only as CLAIMED_COMMAND_ID" ck_journal_claimed_id
  check "lock_user: key and password refused; unlock_user: both work again" ck_lock_unlock
  check "set_sudo no/yes: sudo -l -U and sudo -n agree" ck_set_sudo
  check "add_keys --keys-expire-at: logs in before, refused after, line removed" ck_key_expiry
  check "delete_user --remove-home: login refused, home and grant gone" ck_delete_user
  check "set_password next_boot: staged, not applied" ck_nextboot_staged
  check "next-boot password not applied by systemctl restart accessd" ck_nextboot_not_on_restart
  check "next-boot password not applied by SIGKILL + Restart=on-failure" ck_nextboot_not_on_crash
  check "dpkg -i newer version keeps config, identity, replay set, staged entries" ck_upgrade_keeps_state
  check "reboot: accessd-boot applies the next-boot password before ssh.service" ck_reboot_applies_staged
  check "no password, hash or sealed box in the journal (both boots)" ck_no_secret_in_journal
  check "MQTT round trip through mosquitto on 127.0.0.1" ck_mqtt_round_trip
  check "image reset (rm -rf /var/lib/accessd) gives a new identity" ck_image_reset
  check "dpkg -P leaves nothing" ck_purge
  container_poweroff >/dev/null 2>&1 || true
  kill_cgroup "/sys/fs/cgroup/systemd/$NAME"
  kill_cgroup "/sys/fs/cgroup/unified/$NAME"
  [ "${ACCESSD_BOOT_KEEP:-}" = 1 ] || rm -rf "$tmp/$REL/root"
  summary+=("$REL: $((passed - p0)) passed, $((failed - f0)) failed in $((SECONDS - t_rel))s")
done

echo "== boot suite: $deb_version (upgrade $up_version); evidence in $evidence_root"
echo "note: MemoryMax= and TasksMax= are not enforced in these containers (nspawn on hybrid cgroups); they are not checked here"
for s in "${summary[@]}"; do echo "   $s"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
