#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""memgov scenario runner: the reference gateway under abusive traffic, inside a real memory cgroup.

Each run starts the gateway (examples/gateway) inside a memory cgroup made for it with the given
limit (cgroup v2: a child of a subtree with the memory controller delegated; or v1's memory
controller, whichever is writable), or, where neither is writable, with the gateway's
--memory-limit override (said in the output: there is no kernel to OOM-kill anyone then). The
traffic tool (examples/loadgen) runs outside the cgroup. Every scenario runs governed
(--governor=on) and ungoverned (--governor=off) unless --variants says otherwise.

Per run the runner writes into --out DIR:
  <scenario>-<variant>.csv       timeline every --sample-ms (100 ms): RSS, cgroup usage and working
                                 set (read by the runner), and memgov's and the gateway's /metrics
  <scenario>-<variant>.loadgen.json / .loadgen.log / .gateway.log
and per scenario <scenario>.png (gnuplot, governed beside ungoverned) and <scenario>.md (summary);
summary.md collects every scenario of the invocation.

Only processes the runner started are ever signalled, by PID; the cgroups it made are removed on
every exit path, SIGINT and SIGTERM included. Python 3 standard library only (/usr/bin/python3).
"""

import argparse
import csv
import json
import os
import re
import shutil
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

LEVELS = ["normal", "elevated", "high", "critical", "emergency"]
# Session removals the governor makes under pressure (the rest are ends, TTLs and orphans).
PRESSURE_REASONS = ["age_under_pressure", "over_cost", "lru_under_pressure", "largest_under_pressure",
                    "suspicious"]
OTHER_REASONS = ["expired_idle", "expired_absolute", "orphan"]

# Loads chosen for a 2-core machine that also runs the traffic tool (and, here, other builds):
# about 100-200 real-time streams of 16 kHz pcm16 (32 KB/s each) plus the abusive classes.
# `short` variants (for ctest) are bounded to about 30 s of wall time in a Debug build.
SCENARIOS = {
    "steady": dict(
        what="200 real-time sessions for 20 s, ramped over 2 s: the baseline",
        loadgen=["--sessions", "200", "--duration-s", "20", "--ramp-ms", "2000"],
        gateway=[], seconds=20,
        short=dict(loadgen=["--sessions", "50", "--duration-s", "8", "--ramp-ms", "1000"], seconds=8)),
    "burst": dict(
        what="50 steady sessions for 20 s and a burst of 1,000 sessions connecting at once at 3 s",
        loadgen=["--sessions", "50", "--duration-s", "20", "--ramp-ms", "1000",
                 "--burst", "1000", "--burst-at-ms", "3000"],
        gateway=[], seconds=20,
        short=dict(loadgen=["--sessions", "20", "--duration-s", "8", "--ramp-ms", "500",
                            "--burst", "300", "--burst-at-ms", "1000"], seconds=8)),
    "giant": dict(
        what="50 steady sessions for 20 s and 8 giants streaming as fast as the socket allows "
             "(up to 50,000 frames each)",
        loadgen=["--sessions", "50", "--duration-s", "20", "--ramp-ms", "1000",
                 "--giants", "8", "--giant-frames", "50000"],
        gateway=[], seconds=20,
        short=dict(loadgen=["--sessions", "20", "--duration-s", "8", "--giants", "4",
                            "--giant-frames", "10000"], seconds=8)),
    "orphans": dict(
        what="200 sessions for 20 s of which 30% drop TCP without a close at a random frame "
             "(gateway orphan check every 1 s)",
        loadgen=["--sessions", "200", "--duration-s", "20", "--ramp-ms", "2000",
                 "--orphan-share", "0.3", "--seed", "17"],
        gateway=["--orphan-check-ms", "1000"], seconds=20,
        short=dict(loadgen=["--sessions", "40", "--duration-s", "8", "--orphan-share", "0.3",
                            "--seed", "17"], seconds=8)),
    "kafka-outage": dict(
        what="100 sessions for 30 s; every mock broker down from 5 s to 15 s; producer queue "
             "bound 1 GiB, so only memgov bounds what piles up",
        loadgen=["--sessions", "100", "--duration-s", "30", "--ramp-ms", "1000", "--from-beginning",
                 "--drain-s", "30"],
        gateway=["--mock-broker-down-at-s", "5", "--mock-broker-down-for-s", "10",
                 "--kafka-queue-kb", "1048576", "--kafka-queue-messages", "1000000"], seconds=30,
        short=dict(loadgen=["--sessions", "30", "--duration-s", "12", "--ramp-ms", "500",
                            "--from-beginning", "--drain-s", "20"],
                   gateway=["--mock-broker-down-at-s", "3", "--mock-broker-down-for-s", "4",
                            "--kafka-queue-kb", "1048576", "--kafka-queue-messages", "1000000"],
                   seconds=12)),
    "abuse": dict(
        what="giant + burst + kafka-outage together: 100 steady sessions for 30 s, 8 giants "
             "(50,000 frames each), a burst of 2,000 sessions at 5 s, every broker down from 8 s "
             "to 18 s, producer queue bound 1 GiB",
        loadgen=["--sessions", "100", "--duration-s", "30", "--ramp-ms", "2000",
                 "--giants", "8", "--giant-frames", "50000",
                 "--burst", "2000", "--burst-at-ms", "5000", "--from-beginning", "--drain-s", "30"],
        gateway=["--mock-broker-down-at-s", "8", "--mock-broker-down-for-s", "10",
                 "--kafka-queue-kb", "1048576", "--kafka-queue-messages", "1000000"], seconds=30,
        short=None),
}

STOP = {"signal": None}


class Stopped(Exception):
    pass


def on_signal(signum, _frame):
    STOP["signal"] = signum
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the cleanup finish
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stopped(signal.Signals(signum).name)


def log(msg):
    print(msg, flush=True)


# ------------------------------------------------------------------------------------ cgroups

def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def write_text(path, text):
    with open(path, "w") as f:
        f.write(text)


class Cgroup:
    """A memory cgroup this runner made: v1 (memory controller) or v2 (a child of a subtree whose
    cgroup.subtree_control has memory). create() returns (cgroup or None, why not)."""

    counter = 0

    def __init__(self, path, v2):
        self.path, self.v2 = path, v2

    @staticmethod
    def mounts():
        out = []
        for line in (read_text("/proc/self/mountinfo") or "").splitlines():
            left, _, right = line.partition(" - ")
            f, r = left.split(), right.split()
            if len(r) >= 3 and r[0] in ("cgroup", "cgroup2"):
                out.append((r[0], f[3], f[4], r[2].split(",")))  # type, root, mount point, options
        return out

    @classmethod
    def create(cls, limit, tag):
        if os.geteuid() != 0:
            return None, "not root"
        Cgroup.counter += 1
        name = "memgov-scn-%s-%d-%d" % (tag, os.getpid(), Cgroup.counter)
        why = []
        own = {}
        for line in (read_text("/proc/self/cgroup") or "").splitlines():
            parts = line.split(":", 2)
            if len(parts) == 3:
                own[parts[1]] = parts[2]
        for kind, root, mnt, opts in cls.mounts():
            if kind == "cgroup" and "memory" in opts:
                if root != "/":
                    why.append("v1 memory mounted from %s" % root)
                    continue
                cg = cls._make(os.path.join(mnt, name), False, limit, why)
                if cg:
                    return cg, ""
            elif kind == "cgroup2":
                # A delegated subtree: the mount's root, or the parent of our own cgroup, with
                # memory in its subtree_control (enabled there if we may).
                bases = [mnt]
                mine = own.get("", "/")
                if root == "/" and mine not in ("", "/"):
                    bases.append(os.path.join(mnt, os.path.dirname(mine).lstrip("/")))
                for base in bases:
                    ctl = read_text(os.path.join(base, "cgroup.subtree_control")) or ""
                    if "memory" not in ctl.split():
                        try:
                            write_text(os.path.join(base, "cgroup.subtree_control"), "+memory")
                        except OSError as e:
                            why.append("v2 %s: memory not delegated (%s)" % (base, e.strerror))
                            continue
                    cg = cls._make(os.path.join(base, name), True, limit, why)
                    if cg:
                        return cg, ""
        return None, "; ".join(why) or "no memory cgroup hierarchy mounted"

    @classmethod
    def _make(cls, path, v2, limit, why):
        try:
            os.mkdir(path)
        except OSError as e:
            why.append("cannot create %s: %s" % (path, e.strerror))
            return None
        cg = cls(path, v2)
        try:
            if v2:
                write_text(os.path.join(path, "memory.max"), str(limit))
                try:
                    write_text(os.path.join(path, "memory.swap.max"), "0")
                except OSError:
                    pass
            else:
                write_text(os.path.join(path, "memory.limit_in_bytes"), str(limit))
                try:
                    write_text(os.path.join(path, "memory.memsw.limit_in_bytes"), str(limit))
                except OSError:
                    pass
        except OSError as e:
            why.append("cannot set the limit of %s: %s" % (path, e.strerror))
            cg.remove()
            return None
        return cg

    def enter(self):
        """In the child, before exec: move this process into the cgroup."""
        write_text(os.path.join(self.path, "cgroup.procs"), str(os.getpid()))

    def _u64(self, f):
        t = read_text(os.path.join(self.path, f))
        try:
            return int(t.split()[0]) if t else None
        except ValueError:
            return None

    def _stat(self):
        out = {}
        for line in (read_text(os.path.join(self.path, "memory.stat")) or "").splitlines():
            k, _, v = line.partition(" ")
            if v.strip().isdigit():
                out[k] = int(v)
        return out

    def usage_and_working_set(self):
        usage = self._u64("memory.current" if self.v2 else "memory.usage_in_bytes")
        st = self._stat()
        inactive = st.get("inactive_file" if self.v2 else "total_inactive_file", 0)
        if usage is None:
            return None, None
        return usage, max(0, usage - inactive)

    def peak(self):
        return self._u64("memory.peak" if self.v2 else "memory.max_usage_in_bytes")

    def oom_kills(self):
        t = read_text(os.path.join(self.path, "memory.events" if self.v2 else "memory.oom_control")) or ""
        m = re.search(r"^oom_kill (\d+)", t, re.M)
        return int(m.group(1)) if m else None

    def remove(self):
        if not self.path:
            return
        for _ in range(150):  # the kernel may need a moment after the last process is reaped
            try:
                os.rmdir(self.path)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.02)
        else:
            log("runner: WARNING: could not remove %s" % self.path)
        self.path = None


# ------------------------------------------------------------------------------------ metrics

METRIC_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')
LABEL_RE = re.compile(r'(\w+)="([^"]*)"')


def parse_metrics(text):
    """{name: {frozenset(labels): value}}"""
    out = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        m = METRIC_RE.match(line)
        if not m:
            continue
        labels = frozenset(LABEL_RE.findall(m.group(2) or ""))
        try:
            out.setdefault(m.group(1), {})[labels] = float(m.group(3))
        except ValueError:
            pass
    return out


def mget(ms, name, **labels):
    """Sum of the series of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for ls, v in ms.get(name, {}).items() if want <= set(ls))


def by_label(ms, name, label):
    out = {}
    for ls, v in ms.get(name, {}).items():
        d = dict(ls)
        if label in d:
            out[d[label]] = out.get(d[label], 0) + v
    return out


class Scraper(threading.Thread):
    """Fetches /metrics in a loop so a slow answer never delays the 100 ms timeline."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.url = "http://127.0.0.1:%d/metrics" % port
        self.latest, self.at, self.done = {}, 0.0, threading.Event()

    def fetch(self, timeout=2.0):
        with urllib.request.urlopen(self.url, timeout=timeout) as r:
            return parse_metrics(r.read().decode("utf-8", "replace"))

    def run(self):
        while not self.done.is_set():
            t0 = time.monotonic()
            try:
                self.latest, self.at = self.fetch(), time.monotonic()
            except Exception:
                pass
            self.done.wait(max(0.0, 0.1 - (time.monotonic() - t0)))


def rss_of(pid):
    t = read_text("/proc/%d/status" % pid) or ""
    m = re.search(r"^VmRSS:\s+(\d+) kB", t, re.M)
    return int(m.group(1)) * 1024 if m else None


# ------------------------------------------------------------------------------------ one run

CSV_FIELDS = (["t_s", "rss_bytes", "cg_usage_bytes", "cg_working_set_bytes", "estimate_bytes",
               "limit_bytes", "level", "level_index", "sessions", "admitted_sessions", "admitted_work",
               "refused_sessions", "refused_work", "dry_run_refused", "refused_delta"]
              + ["evicted_" + r for r in PRESSURE_REASONS + OTHER_REASONS]
              + ["evicted_delta", "window_drops", "kafka_inflight_bytes", "kafka_inflight_messages",
                 "delivered_messages", "delivered_bytes", "metrics_age_ms"])


def level_of(ms):
    for i in range(len(LEVELS) - 1, -1, -1):
        if mget(ms, "memgov_pressure_level", level=LEVELS[i]) >= 1:
            return LEVELS[i], i
    return "", -1


def row_from(t, rss, usage, ws, ms, age, prev):
    lvl, li = level_of(ms) if ms else ("", -1)
    rej = by_label(ms, "memgov_rejections_total", "kind") if ms else {}
    adm = by_label(ms, "memgov_admissions_total", "kind") if ms else {}
    rem = by_label(ms, "gateway_session_removals_total", "reason") if ms else {}
    r = {"t_s": "%.2f" % t, "rss_bytes": rss or "", "cg_usage_bytes": "" if usage is None else usage,
         "cg_working_set_bytes": "" if ws is None else ws, "level": lvl, "level_index": li}
    if ms:
        refused = rej.get("session", 0) + rej.get("work", 0)
        evicted = sum(rem.get(x, 0) for x in PRESSURE_REASONS)
        r.update({
            "estimate_bytes": int(mget(ms, "memgov_estimate_bytes")),
            "limit_bytes": int(mget(ms, "memgov_limit_bytes")),
            "sessions": int(mget(ms, "gateway_sessions_active")),
            "admitted_sessions": int(adm.get("session", 0)), "admitted_work": int(adm.get("work", 0)),
            "refused_sessions": int(rej.get("session", 0)), "refused_work": int(rej.get("work", 0)),
            "dry_run_refused": int(mget(ms, "memgov_dry_run_rejections_total")),
            "refused_delta": int(refused - prev.get("refused", refused)),
            "evicted_delta": int(evicted - prev.get("evicted", evicted)),
            "window_drops": int(mget(ms, "gateway_lost_messages_total", reason="window_overflow")),
            "kafka_inflight_bytes": int(mget(ms, "memgov_ledger_bytes", category="kafka_inflight")),
            "kafka_inflight_messages": int(mget(ms, "gateway_kafka_inflight_messages")),
            "delivered_messages": int(mget(ms, "gateway_kafka_delivered_messages_total")),
            "delivered_bytes": int(mget(ms, "gateway_kafka_delivered_bytes_total")),
            "metrics_age_ms": int(age * 1000)})
        for x in PRESSURE_REASONS + OTHER_REASONS:
            r["evicted_" + x] = int(rem.get(x, 0))
        prev["refused"], prev["evicted"] = refused, evicted
    return r


def spawn(argv, out_path, cgroup=None):
    f = open(out_path, "wb")
    try:
        return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=(cgroup.enter if cgroup else None), close_fds=True)
    finally:
        f.close()


MOCK_FLAGS_WITH_VALUE = ("--mock-broker-down-at-s", "--mock-broker-down-for-s", "--mock-broker-ids",
                         "--mock-produce-errors", "--mock-produce-error", "--mock-produce-errors-at-s")


def merge_args(base, extra):
    """`base` with each option of the string `extra` set: an option already in `base` gets the
    new value (or stays, for a flag), others are appended."""
    out = list(base)
    toks = shlex.split(extra or "")
    i = 0
    while i < len(toks):
        opt = toks[i]
        if not opt.startswith("--"):
            raise ValueError("expected an option, got %r" % opt)
        has_value = i + 1 < len(toks) and not toks[i + 1].startswith("--")
        val = toks[i + 1] if has_value else None
        i += 2 if has_value else 1
        if opt in out:
            j = out.index(opt)
            if has_value:
                out[j + 1] = val
        else:
            out += [opt] + ([val] if has_value else [])
    return out


def is_mock_arg(argv, i):
    """Whether argv[i] is a mock-cluster fault option or its value."""
    return argv[i] in MOCK_FLAGS_WITH_VALUE or (i > 0 and argv[i - 1] in MOCK_FLAGS_WITH_VALUE)


def wait_for_lines(path, n, proc, what, log_path, timeout_s=30):
    """Waits until our child `proc` wrote `path` with at least `n` lines."""
    t0 = time.monotonic()
    while not (os.path.exists(path) and len(open(path).read().splitlines()) >= n):
        if proc.poll() is not None or time.monotonic() - t0 > timeout_s:
            raise RuntimeError("%s did not start (exit %s); see %s" % (what, proc.poll(), log_path))
        time.sleep(0.05)


def stop_child(p, sig, wait_s):
    """Signals our own child `p` by its PID, waits, then SIGKILLs it (by PID) if still there."""
    if p is None or p.poll() is not None:
        return
    try:
        os.kill(p.pid, sig)
        p.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    except ProcessLookupError:
        pass


def run_one(args, name, sc, variant, limit, started):
    """One scenario run. Returns its result dict. Children and the cgroup are cleaned up on every
    path out (an exception included)."""
    out = args.out
    base = os.path.join(out, "%s-%s" % (name, variant))
    boot = base + ".boot"
    for p in (boot, base + ".loadgen.json"):
        if os.path.exists(p):
            os.remove(p)
    res = {"scenario": name, "variant": variant, "limit": limit, "gateway_alive": None,
           "gateway_args": sc["gateway"], "loadgen_args": sc["loadgen"],
           "gateway_exit": None, "where": "", "rows": 0}
    cg, why = (None, "--no-cgroup given") if args.no_cgroup else Cgroup.create(limit, name)
    gw = lg = scraper = mock = None
    try:
        # The mock cluster runs in a process of its own, outside the cgroup (unless --kafka
        # embedded): its log is not the gateway's memory, and its topic gets enough partitions to
        # retain an outage's backlog until the read-back has it (librdkafka's mock keeps at most
        # 5 MiB per partition and deletes the oldest beyond that).
        mock_args = [x for i, x in enumerate(sc["gateway"]) if is_mock_arg(sc["gateway"], i)]
        gw_args = [x for i, x in enumerate(sc["gateway"]) if not is_mock_arg(sc["gateway"], i)]
        gw_argv = [args.gateway, "--port", "0", "--http-port", "0", "--bootstrap-file", boot,
                   "--governor", variant]
        if cg:
            res["where"] = "cgroup %s %s" % ("v2" if cg.v2 else "v1", cg.path)
        else:
            res["where"] = "limit override --memory-limit %d (no writable cgroup: %s; no kernel OOM " \
                           "kill possible)" % (limit, why)
            gw_argv += ["--memory-limit", str(limit)]
        t0 = time.monotonic()
        if args.kafka == "separate":
            mboot = base + ".mock.boot"
            if os.path.exists(mboot):
                os.remove(mboot)
            mock = spawn([args.gateway, "--kafka-mock-only", "--partitions", str(args.partitions),
                          "--bootstrap-file", mboot] + mock_args, base + ".mock.log")
            started.append(mock)
            wait_for_lines(mboot, 1, mock, "the mock cluster", base + ".mock.log")
            gw_argv += ["--brokers", open(mboot).read().splitlines()[0]] + gw_args
            res["kafka"] = "mock cluster in a process of its own, %d partitions" % args.partitions
        else:
            gw_argv += sc["gateway"]
            res["kafka"] = "mock cluster embedded in the gateway (3 partitions)"
        log("runner: %s/%s: gateway in %s; %s" % (name, variant, res["where"], res["kafka"]))
        gw = spawn(gw_argv, base + ".gateway.log", cg)
        started.append(gw)
        wait_for_lines(boot, 3, gw, "the gateway", base + ".gateway.log")
        http_port = int(open(boot).read().splitlines()[2])
        scraper = Scraper(http_port)
        scraper.start()
        lg_argv = [args.loadgen, "--bootstrap-file", boot, "--json", base + ".loadgen.json",
                   "--prefix", "scn-%s-%s-%d" % (name, variant, os.getpid()), "--quiet"] + sc["loadgen"]
        lg = spawn(lg_argv, base + ".loadgen.log")  # outside the cgroup
        started.append(lg)
        t_start = time.monotonic()
        deadline = t_start + sc["seconds"] + args.grace_s
        prev, rows, next_progress, last_ms = {}, [], t_start + 1.0, {}
        with open(base + ".csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            w.writeheader()
            tick = t_start
            while True:
                now = time.monotonic()
                usage, ws = cg.usage_and_working_set() if cg else (None, None)
                alive = gw.poll() is None
                ms = scraper.latest if alive else {}
                if ms:
                    last_ms = ms
                row = row_from(now - t_start, rss_of(gw.pid) if alive else None, usage, ws, ms,
                               now - scraper.at, prev)
                w.writerow(row)
                rows.append(row)
                if now >= next_progress:
                    next_progress += 1.0
                    log("  %s/%s t=%5.1fs gateway=%s rss=%s cg_ws=%s est=%s level=%s sessions=%s "
                        "refused=%s evicted=%s inflight=%s delivered=%s" % (
                            name, variant, now - t_start, "up" if alive else "DEAD(%s)" % gw.returncode,
                            mib(row.get("rss_bytes")), mib(row.get("cg_working_set_bytes")),
                            mib(row.get("estimate_bytes")), row.get("level") or "-",
                            row.get("sessions", "-"), row.get("refused_work", "-"),
                            sum(int(row.get("evicted_" + x) or 0) for x in PRESSURE_REASONS),
                            mib(row.get("kafka_inflight_bytes")), row.get("delivered_messages", "-")))
                if lg.poll() is not None:
                    break
                if now > deadline:
                    log("runner: %s/%s: loadgen still running after %d s: stopping it" %
                        (name, variant, deadline - t_start))
                    stop_child(lg, signal.SIGINT, 5)
                    break
                tick += args.sample_ms / 1000.0
                time.sleep(max(0.0, tick - time.monotonic()))
        res["rows"] = len(rows)
        res["loadgen_exit"] = lg.returncode
        res["gateway_alive"] = gw.poll() is None
        if res["gateway_alive"]:
            try:
                last_ms = scraper.fetch(timeout=5.0)
            except Exception:
                pass
        res["final_metrics"] = last_ms
        res["died_at_s"] = None
        if not res["gateway_alive"]:
            dead = [r for r in rows if not r.get("rss_bytes")]
            res["died_at_s"] = float(dead[0]["t_s"]) if dead else None
        res["timeline"] = summarize_rows(rows, limit)
        res["recovered_after_s"] = recovery(sc["gateway"], rows, t_start - t0)
    finally:
        if scraper:
            scraper.done.set()
        stop_child(lg, signal.SIGINT, 5)
        if gw is not None:
            res["gateway_exit"] = gw.poll()
            stop_child(gw, signal.SIGINT, 20)  # graceful: produce, flush, report
            if res["gateway_exit"] is None:
                res["gateway_exit"] = gw.returncode
        if cg:
            res["oom_kills"] = cg.oom_kills()
            res["cg_peak"] = cg.peak()
            cg.remove()
        else:
            res["oom_kills"] = None
            res["cg_peak"] = None
        stop_child(mock, signal.SIGTERM, 10)
        for p in (gw, lg, mock):
            if p in started:
                started.remove(p)
    try:
        with open(base + ".loadgen.json") as f:
            res["loadgen"] = json.load(f)
    except (OSError, ValueError):
        res["loadgen"] = None
    gwlog = read_text(base + ".gateway.log") or ""
    res["gateway_report"] = [l for l in gwlog.splitlines() if "lost" in l or "delivered" in l][-6:]
    save_result(base + ".result.json", res)
    return res


def save_result(path, res):
    """The run's result, for --replot (metrics as lists of [name, labels, value])."""
    r = dict(res)
    r["final_metrics"] = [[n, sorted(ls), v] for n, series in (res.get("final_metrics") or {}).items()
                          for ls, v in series.items()]
    with open(path, "w") as f:
        json.dump(r, f, indent=1)


def load_result(path):
    with open(path) as f:
        r = json.load(f)
    ms = {}
    for n, ls, v in r["final_metrics"]:
        ms.setdefault(n, {})[frozenset(tuple(x) for x in ls)] = v
    r["final_metrics"] = ms
    return r


def mib(v):
    try:
        return "%.1fM" % (int(v) / 1048576.0)
    except (TypeError, ValueError):
        return "-"


def recovery(gw_args, rows, offset):
    """For a mock broker outage: (outage end on the timeline, seconds from it to the first sample
    whose delivered count grew), or None."""
    if "--mock-broker-down-at-s" not in gw_args:
        return None
    up = (float(gw_args[gw_args.index("--mock-broker-down-at-s") + 1])
          + float(gw_args[gw_args.index("--mock-broker-down-for-s") + 1]) - offset)
    last = None
    for r in rows:
        d = r.get("delivered_messages")
        if d in (None, ""):
            continue
        if float(r["t_s"]) >= up and last is not None and int(d) > last:
            return up, float(r["t_s"]) - up
        last = int(d)
    return up, None


def summarize_rows(rows, limit):
    def peak(col):
        vals = [int(r[col]) for r in rows if r.get(col) not in (None, "")]
        return max(vals) if vals else None
    gaps = [abs(int(r["estimate_bytes"]) - int(r["cg_working_set_bytes"])) for r in rows
            if r.get("estimate_bytes") not in (None, "") and r.get("cg_working_set_bytes") not in (None, "")
            and int(r.get("metrics_age_ms") or 0) <= 250]
    levels = {}
    for r in rows:
        if r.get("level"):
            levels.setdefault(r["level"], float(r["t_s"]))
    return {"peak_rss": peak("rss_bytes"), "peak_usage": peak("cg_usage_bytes"),
            "peak_ws": peak("cg_working_set_bytes"), "peak_estimate": peak("estimate_bytes"),
            "max_gap": max(gaps) if gaps else None, "first_at_level": levels}


# ------------------------------------------------------------------------------------ outputs

def identity(lg):
    """(sent, delivered, lost, holds) from the loadgen's JSON."""
    if not lg:
        return None
    lost = sum(lg.get("losses", {}).values())
    return lg["sent_frames"], lg["delivered_frames"], lost, lg["sent_frames"] == lg["delivered_frames"] + lost


def pct(v, limit):
    return "%.1f%%" % (100.0 * v / limit) if v is not None else "-"


def fmt_losses(d):
    return ", ".join("%s %d" % (k, v) for k, v in sorted(d.items()) if v) or "none"


def summary_md(name, sc, results, short):
    L = ["### %s" % name, "", sc["what"] + "." if not short else "Short version (ctest).", "",
         "`loadgen %s`, gateway `%s`." % (" ".join(sc["loadgen"]), " ".join(sc["gateway"]) or "defaults"), ""]
    L.append("| | " + " | ".join("governor %s" % r["variant"] for r in results) + " |")
    L.append("|---" * (len(results) + 1) + "|")

    def line(label, f):
        vals = []
        for r in results:
            try:
                vals.append(f(r))
            except Exception:
                vals.append("-")
        L.append("| %s | %s |" % (label, " | ".join(vals)))

    lim = lambda r: r["limit"]
    line("memory", lambda r: r["where"].split(" (")[0])
    line("kafka", lambda r: r.get("kafka", "-"))
    line("gateway survived", lambda r: "yes" if r["gateway_alive"] else
         "**no** (exit %s at %s s)" % (r["gateway_exit"], r["died_at_s"]))
    line("OOM kills (cgroup)", lambda r: str(r["oom_kills"]) if r["oom_kills"] is not None else "n/a (override)")
    line("peak working set / limit", lambda r: pct(r["timeline"]["peak_ws"], lim(r)))
    line("peak usage (kernel max) / limit", lambda r: pct(r["cg_peak"], lim(r)))
    line("peak RSS / limit", lambda r: pct(r["timeline"]["peak_rss"], lim(r)))
    line("peak memgov estimate / limit", lambda r: pct(r["timeline"]["peak_estimate"], lim(r)))
    line("max \\|estimate − working set\\| / limit", lambda r: pct(r["timeline"]["max_gap"], lim(r)))
    line("first sample at level", lambda r: ", ".join("%s %.1f s" % (k, v) for k, v in
                                                      sorted(r["timeline"]["first_at_level"].items(),
                                                             key=lambda kv: kv[1])) or "-")
    if any(r.get("recovered_after_s") for r in results):
        line("delivering again after the brokers' return", lambda r: "brokers up at %.1f s; %s" % (
            r["recovered_after_s"][0], "%.1f s later" % r["recovered_after_s"][1]
            if r["recovered_after_s"][1] is not None else "not seen"))
    line("sessions (loadgen)", lambda r: "%d (%d admitted)" % (r["loadgen"]["sessions"],
                                                               sum(c["admitted"] for c in r["loadgen"]["classes"].values())))
    line("throughput (delivered)", lambda r: "%.0f frames/s, %.2f MB/s" % (
        r["loadgen"]["delivered_frames"] / r["loadgen"]["seconds"],
        r["loadgen"]["delivered_bytes"] / r["loadgen"]["seconds"] / 1e6))
    line("latency p50 / p99 / p999", lambda r: "%.0f / %.0f / %.0f ms" % tuple(
        r["loadgen"]["latency_ms"][k] for k in ("p50", "p99", "p999")))
    line("sent = delivered + lost (frames)", lambda r: "%d = %d + %d: **%s**" % (
        identity(r["loadgen"])[:3] + ("holds" if identity(r["loadgen"])[3] else "DOES NOT HOLD",)))
    line("loadgen losses by reason", lambda r: fmt_losses(r["loadgen"]["losses"]))
    line("read-back consumer errors", lambda r: fmt_losses(r["loadgen"].get("consumer_errors") or {}))
    for cls in sorted({c for r in results if r.get("loadgen") for c in r["loadgen"]["classes"]}):
        line("class %s: delivered / sent" % cls, lambda r, c=cls: "%d / %d (%.1f%%); %s" % (
            r["loadgen"]["classes"][c]["delivered_frames"], r["loadgen"]["classes"][c]["sent_frames"],
            100.0 * r["loadgen"]["classes"][c]["delivered_frames"] / max(1, r["loadgen"]["classes"][c]["sent_frames"]),
            fmt_losses(r["loadgen"]["classes"][c]["losses"])))
        line("class %s: sessions refused / closes" % cls, lambda r, c=cls: "%d; %s" % (
            r["loadgen"]["classes"][c]["sessions"] - r["loadgen"]["classes"][c]["admitted"],
            ", ".join("%s×%d" % (k, v) for k, v in sorted(r["loadgen"]["classes"][c].get("close_reasons", {}).items()))))
    line("gateway losses by reason (messages, last scrape)", lambda r: fmt_losses(
        {k: int(v) for k, v in by_label(r["final_metrics"], "gateway_lost_messages_total", "reason").items()}))
    line("gateway frames refused by reason", lambda r: fmt_losses(
        {k: int(v) for k, v in by_label(r["final_metrics"], "gateway_frames_refused_total", "reason").items()}))
    line("sessions refused at start (memgov)", lambda r: fmt_losses(
        {k: int(v) for k, v in by_label({"x": {ls: v for ls, v in r["final_metrics"].get("memgov_rejections_total", {}).items()
                                               if ("kind", "session") in ls}}, "x", "reason").items()}))
    line("dry-run refusals (would have refused)", lambda r: str(int(mget(r["final_metrics"], "memgov_dry_run_rejections_total"))))
    line("sessions evicted by reason", lambda r: fmt_losses(
        {k: int(v) for k, v in by_label(r["final_metrics"], "gateway_session_removals_total", "reason").items()
         if k in PRESSURE_REASONS + OTHER_REASONS}))
    L.append("")
    return "\n".join(L)


def plot(args, name, results):
    if not shutil.which("gnuplot"):
        log("runner: gnuplot not found (apt-get install -y gnuplot-nox): no plot")
        return None
    png = os.path.join(args.out, name + ".png")
    n = len(results)
    terms = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True, text=True)
    cairo = "pngcairo" in terms.stdout + terms.stderr
    g = ["set terminal %s size %d,%d font ',9' noenhanced" % ("pngcairo" if cairo else "png", args.plot_width,
                                                              args.plot_height),
         "set output '%s'" % png, "set datafile separator ','",
         "set multiplot layout 1,%d title '%s: memory in a %d MiB limit'" % (n, name, results[0]["limit"] >> 20),
         "set key bottom right font ',8' samplen 2 opaque", "set xlabel 'time (s)'", "set ylabel 'MiB'", "set grid",
         "set style fill transparent solid 0.35 noborder"]
    for i, c in enumerate(["#9be39b", "#f2e36b", "#f5a742", "#e8553b", "#8e1b1b"]):
        g.append("set linetype %d lc rgb '%s'" % (11 + i, c))
    tmax = 1.0  # one time axis for both panels: a run that died ends early, visibly
    for r in results:
        with open(os.path.join(args.out, "%s-%s.csv" % (name, r["variant"]))) as f:
            for row in csv.DictReader(f):
                tmax = max(tmax, float(row["t_s"]))
    for r in results:
        lim = r["limit"] / 1048576.0
        top = lim * 1.15
        f = os.path.join(args.out, "%s-%s.csv" % (name, r["variant"])).replace("'", "")
        status = "survived" if r["gateway_alive"] else "KILLED at %s s" % r["died_at_s"]
        oom = "" if r["oom_kills"] is None else ", OOM kills %d" % r["oom_kills"]
        g.append("unset object")
        if r.get("recovered_after_s"):
            up = r["recovered_after_s"][0]
            down = up - float(r["gateway_args"][r["gateway_args"].index("--mock-broker-down-for-s") + 1])
            g.append("set object 1 rect from %f,0 to %f,%f fc rgb '#cccccc' fs transparent solid 0.3 "
                     "noborder behind" % (down, up, lim * 1.08))
            g.append("set label 1 'brokers down' at %f,%f center font ',8'" % ((down + up) / 2, lim * 1.04))
        else:
            g.append("unset label 1")
        g += ["set title 'governor %s: %s%s'" % (r["variant"], status, oom),
              "set yrange [0:%f]" % (lim * 1.22), "set xrange [0:%f]" % (tmax * 1.02),
              "plot '%s' every ::1 using 1:($8>=0?%f:NaN):($1-0.06):($1+0.06):(%f):(%f):($8+11) "
              "with boxxyerror lc variable notitle, \\" % (f, top, lim * 1.08, lim * 1.22),
              "  %f with lines lw 2 lc rgb 'black' dt 2 title 'limit', \\" % lim,
              "  '' every ::1 using 1:($4/1048576) with lines lw 2 lc rgb '#1f5fbf' title 'cgroup working set', \\",
              "  '' every ::1 using 1:($3/1048576) with lines lw 1 lc rgb '#7fa7e0' title 'cgroup usage', \\",
              "  '' every ::1 using 1:($2/1048576) with lines lw 1 lc rgb '#555555' title 'RSS', \\",
              "  '' every ::1 using 1:($30<=500?$5/1048576:NaN) with lines lw 1 lc rgb '#c0309a' title 'memgov estimate', \\",
              "  '' every ::1 using 1:($15>0?%f:NaN) with points pt 9 ps 0.8 lc rgb '#d07000' title 'refusals', \\" % (lim * 0.04),
              "  '' every ::1 using 1:($24>0?%f:NaN) with points pt 7 ps 0.8 lc rgb '#b00000' title 'evictions', \\" % (lim * 0.09),
              "  NaN with boxes lc 11 title 'level band: normal→emergency'"]
    g.append("unset multiplot")
    script = os.path.join(args.out, name + ".gp")
    write_text(script, "\n".join(g) + "\n")
    p = subprocess.run(["gnuplot", script], capture_output=True, text=True)
    if p.returncode != 0:
        log("runner: gnuplot failed: %s" % p.stderr.strip()[:500])
        return None
    return png


# ------------------------------------------------------------------------------------ main

def parse_args(argv):
    names = "\n".join("  %-13s %s" % (k, v["what"]) for k, v in SCENARIOS.items())
    ap = argparse.ArgumentParser(
        prog="run_scenarios.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the memgov reference gateway inside a real memory cgroup under abusive "
                    "traffic, governed and ungoverned; write timelines (CSV), plots (PNG) and a "
                    "summary (markdown).",
        epilog="scenarios:\n" + names + "\n  all           every scenario above\n\n"
               "exit status: 0 when every run's accounting identity holds (sent = delivered + lost) "
               "and every governed gateway survived; 1 otherwise; 2 on a usage error; 3 when a "
               "run could not start.")
    ap.add_argument("--scenario", action="append", default=None,
                    help="scenario to run (repeatable; 'all'; default: all)")
    ap.add_argument("--variants", default="on,off", help="governor variants, comma-separated (default on,off)")
    ap.add_argument("--limit-mib", type=int, default=256, help="memory limit of the gateway's cgroup (default 256)")
    ap.add_argument("--out", default="scenario-out", help="output directory (default ./scenario-out)")
    ap.add_argument("--short", action="store_true", help="the short load of each scenario (about 30 s; for ctest)")
    ap.add_argument("--no-cgroup", action="store_true", help="do not make a cgroup: use the --memory-limit override")
    ap.add_argument("--skip-without-cgroup", action="store_true",
                    help="print 'MEMGOV_SKIP: <why>' and exit 0 when no cgroup is writable")
    ap.add_argument("--gateway", default=None, help="gateway binary (default: build/release or build/dev examples/gateway/gateway)")
    ap.add_argument("--loadgen", default=None, help="loadgen binary (default: next to the gateway)")
    ap.add_argument("--build-dir", default=None, help="build directory to take both binaries from")
    ap.add_argument("--kafka", choices=("separate", "embedded"), default="separate",
                    help="where the mock Kafka cluster runs: in a process of its own outside the "
                         "cgroup (default), or embedded in the gateway (3 partitions, inside the "
                         "cgroup; its 15 MiB log cannot hold a long outage's backlog)")
    ap.add_argument("--partitions", type=int, default=32,
                    help="partitions of the separate mock cluster's topic (default 32: 160 MiB "
                         "retained, 5 MiB each)")
    ap.add_argument("--loadgen-args", default="",
                    help="loadgen options that replace or add to each scenario's, e.g. "
                         "\"--sessions 1000 --duration-s 20\"")
    ap.add_argument("--gateway-args", default="",
                    help="gateway options that replace or add to each scenario's, e.g. \"--chunk-ms 20\"")
    ap.add_argument("--sample-ms", type=int, default=100, help="timeline period (default 100)")
    ap.add_argument("--grace-s", type=int, default=60,
                    help="extra seconds the loadgen may run past the scenario's duration before it is stopped (default 60)")
    ap.add_argument("--plot-width", type=int, default=900, help="PNG width (default 900)")
    ap.add_argument("--plot-height", type=int, default=500, help="PNG height (default 500)")
    ap.add_argument("--no-plot", action="store_true", help="no PNG")
    ap.add_argument("--replot", action="store_true",
                    help="do not run: rebuild the plots and summaries from the results already in --out")
    ap.add_argument("--list", action="store_true", help="list the scenarios with their exact commands and exit")
    a = ap.parse_args(argv)
    sel = a.scenario or ["all"]
    if "all" in sel:
        sel = list(SCENARIOS)
    for s in sel:
        if s not in SCENARIOS:
            ap.error("--scenario: unknown scenario %r (one of: %s, all)" % (s, ", ".join(SCENARIOS)))
    a.scenario = sel
    a.variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    if not a.variants or any(v not in ("on", "off") for v in a.variants):
        ap.error("--variants: a comma-separated list of 'on' and 'off'")
    if a.limit_mib < 16:
        ap.error("--limit-mib: at least 16")
    if not 1 <= a.partitions <= 1024:
        ap.error("--partitions: 1 to 1024")
    for opt in ("loadgen_args", "gateway_args"):
        try:
            merge_args([], getattr(a, opt))
        except ValueError as e:
            ap.error("--%s: %s" % (opt.replace("_", "-"), e))
    if a.sample_ms < 20:
        ap.error("--sample-ms: at least 20")
    if a.short and any(SCENARIOS[s]["short"] is None for s in sel):
        ap.error("--short: no short version of %s" % ", ".join(s for s in sel if SCENARIOS[s]["short"] is None))
    return a


def find_binaries(a):
    def first(cands):
        for c in cands:
            if c and os.access(c, os.X_OK):
                return c
        return None
    dirs = [a.build_dir] if a.build_dir else [os.path.join(ROOT, "build", d) for d in
                                              ("release", "dev") if d]
    a.gateway = a.gateway or first(os.path.join(d, "examples/gateway/gateway") for d in dirs)
    if a.gateway and not a.loadgen:
        a.loadgen = first([os.path.join(os.path.dirname(os.path.dirname(a.gateway)), "loadgen/loadgen")])
    a.loadgen = a.loadgen or first(os.path.join(d, "examples/loadgen/loadgen") for d in dirs)
    return a.gateway and a.loadgen


def main(argv):
    a = parse_args(argv)
    if a.list:
        for k, v in SCENARIOS.items():
            print("%s: %s\n  gateway %s\n  loadgen %s" % (k, v["what"], " ".join(v["gateway"]), " ".join(v["loadgen"])))
        return 0
    if not find_binaries(a):
        print("run_scenarios: gateway/loadgen binaries not found; build them "
              "(cmake --build <dir> --target gateway loadgen) and pass --build-dir", file=sys.stderr)
        return 3
    limit = a.limit_mib << 20
    if a.skip_without_cgroup:
        cg, why = Cgroup.create(limit, "probe")
        if not cg:
            print("MEMGOV_SKIP: no writable memory cgroup: %s" % why, flush=True)
            return 0
        cg.remove()
    os.makedirs(a.out, exist_ok=True)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = []
    all_md, ok = [], True
    log("runner: gateway %s, loadgen %s, limit %d MiB, out %s" % (a.gateway, a.loadgen, a.limit_mib, a.out))
    try:
        for name in a.scenario:
            sc = dict(SCENARIOS[name])
            if a.short:
                sc.update(sc["short"])
                sc.setdefault("gateway", SCENARIOS[name]["gateway"])
            sc["loadgen"] = merge_args(sc["loadgen"], a.loadgen_args)
            sc["gateway"] = merge_args(sc["gateway"], a.gateway_args)
            results = []
            for v in a.variants:
                if a.replot:
                    results.append(load_result(os.path.join(a.out, "%s-%s.result.json" % (name, v))))
                    continue
                r = run_one(a, name, sc, v, limit, started)
                results.append(r)
                idn = identity(r["loadgen"])
                alive = r["gateway_alive"]
                log("runner: %s/%s: gateway %s; OOM kills %s; peak working set %s of the limit; "
                    "sent %s = delivered %s + lost %s: %s" % (
                        name, v, "survived" if alive else "DIED (exit %s)" % r["gateway_exit"],
                        r["oom_kills"] if r["oom_kills"] is not None else "n/a",
                        pct(r["timeline"]["peak_ws"], limit),
                        *(idn[:3] if idn else ("?", "?", "?")),
                        ("holds" if idn[3] else "DOES NOT HOLD") if idn else "no loadgen JSON"))
                if not idn or not idn[3]:
                    ok = False
                if v == "on" and not alive:
                    ok = False
            md = summary_md(name, sc, results, a.short)
            png = None if a.no_plot else plot(a, name, results)
            if png:
                md += "\n![%s](%s)\n" % (name, os.path.basename(png))
            write_text(os.path.join(a.out, name + ".md"), md)
            all_md.append(md)
            print(md, flush=True)
    except Stopped as e:
        log("runner: stopped by %s: killed our children, removed our cgroups" % e)
        ok = False
        return 130
    except RuntimeError as e:
        log("runner: %s" % e)
        return 3
    finally:
        for p in list(started):  # only what we started, by PID
            stop_child(p, signal.SIGKILL, 5)
        header = "# memgov scenarios (%s, limit %d MiB, %s)\n\n" % (
            time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), a.limit_mib, "short" if a.short else "full")
        if all_md:
            write_text(os.path.join(a.out, "summary.md"), header + "\n".join(all_md))
    log("runner: %s" % ("OK: every identity holds and every governed gateway survived" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
