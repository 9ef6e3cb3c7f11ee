# shellcheck shell=bash
# scripts/bench-common.sh: shell code shared by the benchmark scripts
# (scripts/bench-runtime, scripts/bench-api, scripts/bench-images). Sourced,
# not run. Defines:
#
#   CRUN_NS                  runs a command (crun) in a private mount namespace
#                            with /sys/fs/cgroup/unified unmounted
#   bench_write_oci_py FILE  writes the program that times an OCI runtime CLI
#                            (crun or runc) on overlay bundles (see its text)
#   bench_kill_cgroups CG..  thaws and SIGKILLs every process in these cgroups
#                            (absolute paths below the root, every hierarchy)
#   bench_remove_cgroups CG.. removes them (and their children)
#   bench_unmount_under DIR  lazily unmounts everything mounted below DIR, and
#                            the overlay views of state dirs there
#   bench_load, bench_io     the load average and the I/O pressure now
#   bench_source_state REPO [BINARY]  the commit, noting uncommitted changes
#                            and sources newer than BINARY
#   bench_start_daemon BIN STATE CG IMAGE KEY BRIDGE LOGFILE [LOG [WORKER_LOG]]
#                            starts BIN/clawdspaced on a free loopback port and
#                            waits for it; sets BENCH_PORT, BENCH_DAEMON_PID
#   bench_machine_env REPO   exports BENCH_DATE, BENCH_OS, BENCH_KERNEL,
#                            BENCH_CPU, BENCH_CORES, BENCH_MEM, BENCH_CGMODE,
#                            BENCH_VIRT, BENCH_COMMIT (unless set), BENCH_RUSTC
#                            (the machine description of every report)

# crun 1.8 refuses hybrid cgroups: run it with /sys/fs/cgroup/unified
# unmounted, in a private mount namespace (unshare -m makes mount propagation
# private). The command replaces unshare and sh, so a signal to the pid
# reaches it.
# shellcheck disable=SC2016,SC2034
CRUN_NS=(unshare -m sh -c 'umount /sys/fs/cgroup/unified 2>/dev/null || true; exec "$@"' sh)

bench_kill_cgroups() {
    local cg d sub p
    for cg in "$@"; do
        for d in /sys/fs/cgroup/*"$cg" /sys/fs/cgroup"$cg"; do
            [[ -d $d ]] || continue
            for sub in "$d"/*/ "$d"/; do
                [[ -d $sub ]] || continue
                [[ -f $sub/freezer.state ]] && echo THAWED >"$sub/freezer.state" 2>/dev/null
                [[ -f $sub/cgroup.freeze ]] && echo 0 >"$sub/cgroup.freeze" 2>/dev/null
                if [[ -r $sub/cgroup.procs ]]; then
                    while read -r p; do
                        [[ -n $p ]] && kill -KILL "$p" 2>/dev/null && echo "cleanup: killed $p in $sub" >&2
                    done <"$sub/cgroup.procs"
                fi
            done
        done
    done
    return 0
}

bench_remove_cgroups() {
    local cg d
    for cg in "$@"; do
        for d in /sys/fs/cgroup/*"$cg" /sys/fs/cgroup"$cg"; do
            [[ -d $d ]] || continue
            for _ in $(seq 50); do
                rmdir "$d"/*/ 2>/dev/null
                rmdir "$d" 2>/dev/null && break
                sleep 0.05
            done
            [[ -d $d ]] && echo "cleanup: could not remove cgroup $d" >&2
        done
    done
    return 0
}

bench_unmount_under() {
    local m v d
    awk -v p="$1/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do
            umount -l "$m" 2>/dev/null && echo "cleanup: unmounted $m" >&2
        done
    # The overlay views of state dirs below $1 (the same directory as one).
    for v in /run/clawdspace/overlay-view-*; do
        [[ -d $v ]] || continue
        while read -r d; do
            if [[ $v -ef $d ]]; then
                umount -l "$v" 2>/dev/null && rmdir "$v" && echo "cleanup: unmounted $v" >&2
                break
            fi
        done < <(find "$1" -maxdepth 3 -type d 2>/dev/null)
    done
    return 0
}

bench_load() {
    cut -d' ' -f1-3 /proc/loadavg
}

bench_io() {
    awk '/^some/ { sub("avg10=", "", $2); print $2 }' /proc/pressure/io 2>/dev/null || true
}

# Median ms of 5 writes of a fresh process's pid to `cgroup.procs` of a
# cgroup made for it (and removed); empty when none can be made.
bench_cgroup_move_ms() {
    local base=/sys/fs/cgroup
    [[ $(stat -fc %T $base) == cgroup2fs ]] || base=/sys/fs/cgroup/cpu
    python3 - "$base/clawdspace-bench-move-$$" <<'PY' 2>/dev/null || true
import os, statistics, sys, time
d = sys.argv[1]
os.mkdir(d)
try:
    times = []
    for _ in range(5):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            t = time.perf_counter()
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
            os.write(w, str(time.perf_counter() - t).encode())
            os._exit(0)
        os.close(w)
        times.append(float(os.read(r, 64)) * 1e3)
        os.close(r)
        os.waitpid(pid, 0)
        time.sleep(0.05)
    print("%.1f" % statistics.median(times))
finally:
    os.rmdir(d)
PY
}

# As scripts/clawdspace.service runs it (many files, no colours in the log),
# with state dir STATE, cgroup parent CG, default image IMAGE, key KEY, a
# bridge BRIDGE and a /16 of its own, Docker Hub names sent to a dead port
# and the auto-sleep pushed out of the way (a paused space would skew
# times); its output to LOGFILE. Returns 1 (the log on stderr) if it exits
# or does not answer /api/health within 10 s.
bench_start_daemon() {
    local bin=$1 state=$2 cg=$3 image=$4 key=$5 bridge=$6 logf=$7 log=${8:-info} wlog=${9:-}
    BENCH_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    (
        ulimit -n 1048576 2>/dev/null || true
        exec env PORT="$BENCH_PORT" API_KEY="$key" CLAWDSPACE_STATE_DIR="$state" \
            CLAWDSPACE_CGROUP_PARENT="$cg" CLAWDSPACE_IMAGE="$image" \
            CLAWDSPACE_DOCKER_MIRROR=127.0.0.1:1 IDLE_TIMEOUT_MS=86400000 \
            CLAWDSPACE_BRIDGE="$bridge" CLAWDSPACE_SUBNET="10.$((RANDOM % 100 + 100)).0.0/16" \
            CLAWDSPACE_LOG="$log" ${wlog:+CLAWDSPACE_WORKER_LOG="$wlog"} \
            NO_COLOR=1 "$bin/clawdspaced"
    ) >"$logf" 2>&1 &
    BENCH_DAEMON_PID=$!
    for _ in $(seq 100); do
        python3 -c "import http.client as h; c=h.HTTPConnection('127.0.0.1', $BENCH_PORT, timeout=1); c.request('GET', '/api/health'); assert c.getresponse().status == 200" 2>/dev/null && return 0
        kill -0 "$BENCH_DAEMON_PID" 2>/dev/null || { cat "$logf" >&2; BENCH_DAEMON_PID=; return 1; }
        sleep 0.1
    done
    cat "$logf" >&2
    return 1
}

bench_machine_env() {
    local repo=${1:-.} cgmode virt=
    if [[ -d /sys/fs/cgroup/unified ]] && [[ $(stat -fc %T /sys/fs/cgroup) != cgroup2fs ]]; then
        cgmode="hybrid (cgroup v1 controllers + cgroup2 at /sys/fs/cgroup/unified)"
    elif [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]]; then
        cgmode="cgroup v2 (unified)"
    else
        cgmode="cgroup v1 (legacy)"
    fi
    # What moving a process into a cgroup costs here (both sides move one
    # per create): 5-10 ms where the write waits for an RCU grace period,
    # under 1 ms with cgroup2's favordynmods (docs/OPERATIONS.md).
    local move
    move=$(bench_cgroup_move_ms)
    [[ -n $move ]] && cgmode="$cgmode; moving a process into a cgroup: $move ms (median of 5)"
    [[ -r /sys/class/dmi/id/product_name ]] && virt=$(cat /sys/class/dmi/id/product_name 2>/dev/null)
    grep -q '^flags.*hypervisor' /proc/cpuinfo && virt="${virt:+$virt, }virtual machine"
    BENCH_DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
    BENCH_KERNEL=$(uname -r)
    BENCH_OS=$(. /etc/os-release && echo "$PRETTY_NAME")
    BENCH_CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
    BENCH_CORES=$(nproc)
    BENCH_MEM=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    BENCH_CGMODE=$cgmode
    BENCH_VIRT=$virt
    [[ -n ${BENCH_COMMIT:-} ]] || BENCH_COMMIT=$(bench_source_state "$repo")
    BENCH_RUSTC=$(rustc --version 2>/dev/null || echo unknown)
    export BENCH_DATE BENCH_KERNEL BENCH_OS BENCH_CPU BENCH_CORES BENCH_MEM BENCH_CGMODE \
        BENCH_VIRT BENCH_COMMIT BENCH_RUSTC
}

# The commit the sources are at, noting uncommitted changes to runtime/ or
# api/ and sources newer than BINARY (when given).
bench_source_state() {
    local repo=$1 bin=${2:-} c
    c=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if ! git -C "$repo" diff --quiet HEAD -- runtime api 2>/dev/null; then
        c="$c with uncommitted changes in runtime/ or api/"
    fi
    if [[ -n $bin ]] && [[ -n $(find "$repo/runtime" "$repo/api" -name '*.rs' -newer "$bin" 2>/dev/null | head -1) ]]; then
        c="$c (sources newer than the binary)"
    fi
    echo "$c"
}

bench_write_oci_py() {
    cat >"$1" <<'PY'
"""Times an OCI runtime CLI (crun or runc) on overlay bundles of a rootfs.

Usage: oci.py RUNTIME WORKDIR ROOTFS CGROUP_PARENT RUNS WARMUP IDLE MEMORY PREFIX [EXTRA]
EXTRA: "echo" also times `exec ID sh -c 'echo hi'` (op "exec_echo", output
checked) after `exec ID true`.
Prints one JSON object. What is timed is the runtime command alone; the
overlay mount, config.json and the unmount afterwards are prepared untimed.
"""
import json, os, shutil, subprocess, sys, time

rt, work, rootfs, cgparent = sys.argv[1:5]
runs, warmup, idle, memory = (int(v) for v in sys.argv[5:9])
prefix = sys.argv[9]
extra = sys.argv[10].split(",") if len(sys.argv) > 10 and sys.argv[10] else []
state = os.path.join(work, rt + "-state")
bundles = os.path.join(work, rt + "-bundles")
os.makedirs(state, exist_ok=True)
os.makedirs(bundles, exist_ok=True)
exe = shutil.which(rt)
base = [exe, "--root", state]
DEVNULL = subprocess.DEVNULL

# The same config for both runtimes: `runc spec`, made to match a space
# (uid 1000, no capabilities, same namespaces and limits, deny-all devices).
tmpl_dir = os.path.join(work, "spec-template")
if not os.path.exists(os.path.join(tmpl_dir, "config.json")):
    os.makedirs(tmpl_dir, exist_ok=True)
    subprocess.run(["runc", "spec", "--bundle", tmpl_dir], check=True)
with open(os.path.join(tmpl_dir, "config.json")) as f:
    template = json.load(f)
p = template["process"]
p["terminal"] = False
p["args"] = ["/bin/busybox", "sleep", "1000000"]
p["user"] = {"uid": 1000, "gid": 1000}
p["cwd"] = "/"
p["noNewPrivileges"] = True
p["capabilities"] = {k: [] for k in ("bounding", "effective", "permitted", "ambient")}
template["root"] = {"path": "rootfs", "readonly": False}
lx = template["linux"]
lx["namespaces"] = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")]
lx["resources"] = {
    "devices": [{"allow": False, "access": "rwm"}],
    "memory": {"limit": memory},
    "cpu": {"quota": 100000, "period": 100000},
    "pids": {"limit": 1024},
}


V2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")


def cg_file(ctrl, cid, name):
    if V2:
        return "/sys/fs/cgroup%s/%s/%s" % (cgparent, cid, name)
    return "/sys/fs/cgroup/%s%s/%s/%s" % (ctrl, cgparent, cid, name)


def prepare(cid):
    b = os.path.join(bundles, cid)
    for d in ("upper", "work", "rootfs"):
        os.makedirs(os.path.join(b, d))
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    "lowerdir=%s,upperdir=%s/upper,workdir=%s/work" % (rootfs, b, b),
                    os.path.join(b, "rootfs")], check=True)
    spec = json.loads(json.dumps(template))
    spec["hostname"] = cid
    spec["linux"]["cgroupsPath"] = "%s/%s" % (cgparent, cid)
    with open(os.path.join(b, "config.json"), "w") as f:
        json.dump(spec, f)
    return b


def unprepare(cid):
    b = os.path.join(bundles, cid)
    subprocess.run(["umount", os.path.join(b, "rootfs")], check=True)
    shutil.rmtree(b)


def timed(args, capture=False, expect=None):
    t = time.perf_counter_ns()
    if capture:
        r = subprocess.run(base + args, stdin=DEVNULL, capture_output=True)
    else:
        # A detached container would inherit (and hold) captured pipes.
        r = subprocess.run(base + args, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)
    ms = (time.perf_counter_ns() - t) / 1e6
    if r.returncode != 0:
        err = r.stderr.decode(errors="replace") if capture else ""
        raise SystemExit("%s %s failed (%d) %s" % (rt, " ".join(args), r.returncode, err))
    if expect is not None and r.stdout != expect:
        raise SystemExit("%s %s: stdout %r, expected %r" % (rt, " ".join(args), r.stdout, expect))
    return ms


def freezer(cid):
    if V2:
        with open(cg_file("", cid, "cgroup.events")) as f:
            return "FROZEN" if "frozen 1" in f.read().splitlines() else "THAWED"
    with open(cg_file("freezer", cid, "freezer.state")) as f:
        return f.read().strip()


def cycle(cid):
    b = prepare(cid)
    mounted = True
    try:
        out = {}
        out["create"] = timed(["run", "-d", "--bundle", b, cid])
        out["exec"] = timed(["exec", cid, "true"], capture=True)
        if "echo" in extra:
            out["exec_echo"] = timed(["exec", cid, "sh", "-c", "echo hi"], capture=True,
                                     expect=b"hi\n")
        out["pause"] = timed(["pause", cid])
        if freezer(cid) != "FROZEN":
            raise SystemExit("%s pause: not frozen" % rt)
        out["resume"] = timed(["resume", cid])
        if freezer(cid) != "THAWED":
            raise SystemExit("%s resume: still frozen" % rt)
        out["destroy"] = timed(["delete", "-f", cid])
        # Not part of any runtime's figure: the unmount of the container's
        # overlay after the delete (for comparison with runtimes that do it).
        t = time.perf_counter_ns()
        subprocess.run(["umount", os.path.join(b, "rootfs")], check=True)
        out["umount"] = (time.perf_counter_ns() - t) / 1e6
        mounted = False
        shutil.rmtree(b)
    except BaseException:
        subprocess.run(base + ["delete", "-f", cid], stdout=DEVNULL, stderr=DEVNULL)
        if mounted:
            unprepare(cid)
        raise
    return out


def mem(pid):
    rss = pss = 0
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def supervisors():
    """Processes running the runtime binary itself (a monitor or shim)."""
    out = []
    real = os.path.realpath(exe)
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.path.realpath("/proc/%s/exe" % d) == real:
                    out.append(int(d))
            except OSError:
                pass
    return out


def idle_memory():
    ids = ["%s-idle-%d" % (prefix, i) for i in range(idle)]
    made = []
    try:
        for cid in ids:
            b = prepare(cid)
            made.append(cid)
            subprocess.run(base + ["run", "-d", "--bundle", b, cid],
                           stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL, check=True)
        time.sleep(0.5)
        per, procs, cgk = [], 0, []
        for cid in ids:
            with open(cg_file("pids", cid, "cgroup.procs")) as f:
                pids = [int(x) for x in f.read().split()]
            procs += len(pids)
            rss = sum(mem(p)[0] for p in pids)
            pss = sum(mem(p)[1] for p in pids)
            per.append({"rss_kib": rss, "pss_kib": pss})
            with open(cg_file("memory", cid, "memory.current" if V2 else "memory.usage_in_bytes")) as f:
                cgk.append(int(f.read()) // 1024)
        sup = supervisors()
        sup_rss = sum(mem(p)[0] for p in sup)
        k = max(len(ids), 1)
        return {
            "spaces": len(ids),
            "space_processes": procs,
            "space_rss_kib_per_space": sum(x["rss_kib"] for x in per) / k,
            "space_pss_kib_per_space": sum(x["pss_kib"] for x in per) / k,
            "per_space": per,
            "space_cgroup_memory_kib": cgk,
            "supervisor_processes": len(sup),
            "supervisor_rss_kib_per_space": sup_rss / k,
        }
    finally:
        for cid in made:
            subprocess.run(base + ["delete", "-f", cid], stdout=DEVNULL, stderr=DEVNULL)
            unprepare(cid)


ops = ["create", "exec"] + (["exec_echo"] if "echo" in extra else []) + [
    "pause", "resume", "destroy", "umount"]
samples = {o: [] for o in ops}
for i in range(warmup + runs):
    r = cycle("%s-%d" % (prefix, i))
    if i >= warmup:
        for o in ops:
            samples[o].append(round(r[o], 3))
out = {"runtime": rt, "version": subprocess.run([exe, "--version"], capture_output=True,
                                                text=True).stdout.splitlines()[0],
       "runs": runs, "ops": {o: {"samples_ms": samples[o]} for o in ops}}
if idle > 0:
    out["idle"] = idle_memory()
print(json.dumps(out))
PY
}
