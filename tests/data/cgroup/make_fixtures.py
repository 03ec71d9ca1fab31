#!/usr/bin/env python3
"""Writes the cgroup fixture trees next to this script (one directory per case).

Each case is a fake filesystem root: proc/self/mountinfo, proc/self/cgroup, proc/meminfo,
proc/self/statm, proc/pressure/memory and the cgroup files under sys/fs/cgroup. The expected
readings are asserted in tests/unit/cgroup_test.cpp; README.md lists what each case covers.
Run it again after editing; it rewrites every case from scratch.
"""
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
MIB = 1024 * 1024
GIB = 1024 * MIB
SENTINEL = 9223372036854771712

PSI = ("some avg10=1.50 avg60=0.75 avg300=0.25 total=123456\n"
       "full avg10=0.50 avg60=0.25 avg300=0.10 total=65432\n")
MEMINFO = ("MemTotal:       16777216 kB\nMemFree:         8000000 kB\n"
           "MemAvailable:   12000000 kB\nBuffers:            1584 kB\nCached:            43672 kB\n")
STATM = "20000 1000 100 50 0 900 0\n"  # resident = 1000 pages

# This host kind's mountinfo (hybrid: v1 controllers, cgroup2 at /sys/fs/cgroup/unified).
HYBRID_MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334460k,nr_inodes=3083615,mode=755
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24684084k
26 24 0:24 / /dev/pts rw,relatime - devpts devpts rw,mode=600,ptmxmode=000
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_ID = "0123456789abcdef0123456789abcdef"  # anonymised container id
HYBRID_CGROUP = f"""\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/docker/{HYBRID_ID}
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
"""

V1_STAT_KEYS = ["cache", "rss", "rss_huge", "shmem", "mapped_file", "dirty", "writeback",
                "swap", "pgpgin", "pgpgout", "pgfault", "pgmajfault", "inactive_anon",
                "active_anon", "inactive_file", "active_file", "unevictable",
                "hierarchical_memory_limit", "hierarchical_memsw_limit", "total_cache",
                "total_rss", "total_inactive_anon", "total_active_anon", "total_inactive_file",
                "total_active_file", "total_unevictable"]


def write(case, rel, text):
    path = os.path.join(HERE, case, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def proc(case, mountinfo, cgroup, psi=PSI, meminfo=MEMINFO, statm=STATM):
    if mountinfo is not None:
        write(case, "proc/self/mountinfo", mountinfo)
    if cgroup is not None:
        write(case, "proc/self/cgroup", cgroup)
    if meminfo is not None:
        write(case, "proc/meminfo", meminfo)
    if statm is not None:
        write(case, "proc/self/statm", statm)
    if psi is not None:
        write(case, "proc/pressure/memory", psi)


def v1_stat(values, hier=SENTINEL, order=None):
    vals = {k: 0 for k in V1_STAT_KEYS}
    vals["hierarchical_memory_limit"] = hier
    vals["hierarchical_memsw_limit"] = SENTINEL
    vals.update(values)
    keys = order or list(vals.keys())
    return "".join(f"{k} {vals[k]}\n" for k in keys)


def v1_group(case, d, limit=SENTINEL, usage=0, peak=0, oom=0, stat=None):
    write(case, f"{d}/memory.limit_in_bytes", f"{limit}\n")
    write(case, f"{d}/memory.usage_in_bytes", f"{usage}\n")
    write(case, f"{d}/memory.max_usage_in_bytes", f"{peak}\n")
    write(case, f"{d}/memory.oom_control", f"oom_kill_disable 0\nunder_oom 0\noom_kill {oom}\n")
    write(case, f"{d}/memory.stat", stat if stat is not None else v1_stat({}))


def v2_stat(values, order=None):
    keys = ["anon", "file", "kernel", "kernel_stack", "pagetables", "sock", "shmem",
            "file_mapped", "file_dirty", "file_writeback", "inactive_anon", "active_anon",
            "inactive_file", "active_file", "unevictable", "slab", "pgfault"]
    vals = {k: 0 for k in keys}
    vals.update(values)
    keys = order or list(vals.keys())
    return "".join(f"{k} {vals[k]}\n" for k in keys)


def v2_group(case, d, mx="max", high="max", current=0, peak=0, oom=0, stat=None, psi=PSI):
    write(case, f"{d}/memory.max", f"{mx}\n")
    write(case, f"{d}/memory.high", f"{high}\n")
    write(case, f"{d}/memory.current", f"{current}\n")
    write(case, f"{d}/memory.peak", f"{peak}\n")
    write(case, f"{d}/memory.events",
          f"low 0\nhigh 0\nmax {oom}\noom {oom}\noom_kill {oom}\noom_group_kill 0\n")
    write(case, f"{d}/memory.stat", stat if stat is not None else v2_stat({}))
    write(case, f"{d}/memory.pressure", psi)


V2_MOUNTINFO = ("22 27 0:21 / /proc rw,relatime - proc proc rw\n"
                "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
                "31 23 0:28 {root} /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - "
                "cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n")


def v2_root(case):
    write(case, "sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n")
    write(case, "sys/fs/cgroup/memory.pressure", PSI)


def main():
    for entry in os.listdir(HERE):
        if os.path.isdir(os.path.join(HERE, entry)):
            shutil.rmtree(os.path.join(HERE, entry))

    # Pure v2, nested; the parent has the lower limit and siblings' usage.
    c = "v2_nested_parent_limit"
    proc(c, V2_MOUNTINFO.format(root="/"), "0::/kubepods/pod1/ctr\n")
    v2_root(c)
    v2_group(c, "sys/fs/cgroup/kubepods", current=900 * MIB)
    v2_group(c, "sys/fs/cgroup/kubepods/pod1", mx=256 * MIB, current=120 * MIB, peak=200 * MIB,
             oom=3, stat=v2_stat({"inactive_file": 20 * MIB, "active_file": 5 * MIB}))
    v2_group(c, "sys/fs/cgroup/kubepods/pod1/ctr", mx=512 * MIB, current=100 * MIB,
             stat=v2_stat({"inactive_file": 10 * MIB}),
             psi="some avg10=2.00 avg60=1.00 avg300=0.50 total=777\n"
                 "full avg10=1.00 avg60=0.50 avg300=0.25 total=555\n")

    # v2 memory.high below memory.max on the leaf.
    c = "v2_high"
    proc(c, V2_MOUNTINFO.format(root="/"), "0::/app\n")
    v2_root(c)
    v2_group(c, "sys/fs/cgroup/app", mx=1 * GIB, high=768 * MIB, current=300 * MIB,
             stat=v2_stat({"inactive_file": 100 * MIB}))

    # v2 with "max" everywhere: no cgroup limit, fall back to MemTotal and statm.
    c = "v2_max"
    proc(c, V2_MOUNTINFO.format(root="/"), "0::/app\n")
    v2_root(c)
    v2_group(c, "sys/fs/cgroup/app", current=300 * MIB)

    # v2 memory.max = 0: a real limit of zero bytes.
    c = "v2_zero"
    proc(c, V2_MOUNTINFO.format(root="/"), "0::/app\n")
    v2_root(c)
    v2_group(c, "sys/fs/cgroup/app", mx=0, current=4096)

    # v1 container view: the mount root is the container's cgroup; the limit sits on an
    # invisible parent and shows only as hierarchical_memory_limit.
    c = "v1_hierarchical"
    mi = ("22 27 0:21 / /proc rw,relatime - proc proc rw\n"
          "31 23 0:28 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n"
          "35 31 0:32 /docker/abc /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime master:16 - "
          "cgroup cgroup rw,memory\n"
          "36 31 0:33 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid master:11 - cgroup cgroup "
          "rw,cpu,cpuacct\n")
    proc(c, mi, "12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n0::/\n")
    v1_group(c, "sys/fs/cgroup/memory", usage=200 * MIB, peak=300 * MIB, oom=1,
             stat=v1_stat({"total_inactive_file": 50 * MIB, "inactive_file": 40 * MIB},
                          hier=512 * MIB))

    # v1 nested, visible parent limit; hierarchical_memory_limit agrees.
    c = "v1_nested"
    mi = ("22 27 0:21 / /proc rw,relatime - proc proc rw\n"
          "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n")
    proc(c, mi, "4:memory:/svc/worker\n")
    v1_group(c, "sys/fs/cgroup/memory", usage=2 * GIB)
    v1_group(c, "sys/fs/cgroup/memory/svc", limit=1 * GIB, usage=600 * MIB,
             stat=v1_stat({"total_inactive_file": 100 * MIB}, hier=1 * GIB))
    v1_group(c, "sys/fs/cgroup/memory/svc/worker", limit=2 * GIB, usage=500 * MIB,
             stat=v1_stat({"total_inactive_file": 10 * MIB}, hier=1 * GIB))

    # v1 limit at or above physical memory counts as unlimited.
    c = "v1_above_physical"
    proc(c, mi, "4:memory:/svc\n")
    v1_group(c, "sys/fs/cgroup/memory")
    v1_group(c, "sys/fs/cgroup/memory/svc", limit=64 * GIB, usage=500 * MIB)

    # This host kind's own layout (hybrid, unlimited sentinel everywhere).
    for c, leaf_limit in (("hybrid_host", SENTINEL), ("hybrid_host_limited", 128 * MIB)):
        proc(c, HYBRID_MOUNTINFO, HYBRID_CGROUP)
        write(c, "sys/fs/cgroup/unified/cgroup.controllers", "")
        write(c, "sys/fs/cgroup/unified/memory.pressure",
              "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
              "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
        v1_group(c, "sys/fs/cgroup/memory", usage=3 * GIB)
        v1_group(c, "sys/fs/cgroup/memory/docker", usage=40 * MIB)
        hier = leaf_limit
        v1_group(c, f"sys/fs/cgroup/memory/docker/{HYBRID_ID}", limit=leaf_limit,
                 usage=5279744, peak=10362880,
                 stat=v1_stat({"cache": 2191360, "rss": 1683456, "inactive_file": 565248,
                               "total_inactive_file": 565248, "active_file": 1613824},
                              hier=hier))

    # Garbage everywhere: malformed limit, usage, stat, PSI and mountinfo lines. /svc has a
    # valid limit but unreadable usage (usage falls back to the RSS); /svc/app's own limits are
    # garbage (ignored, with reasons); its PSI file is garbage (falls back to /proc).
    c = "v2_garbage"
    mi = ("this is not mountinfo\n"
          "1 2 3\n"
          "31 23 0:28 / /sys/fs/cgroup rw shared:9 - cgroup2 cgroup2 rw\n"
          "99 1 0:1 / /x rw no-separator-here cgroup2 cgroup2 rw\n")
    proc(c, mi, "garbage\n0::/svc/app\nx:y\n")
    v2_root(c)
    v2_group(c, "sys/fs/cgroup/svc", mx=1 * GIB, current="lots", stat="inactive_file twelve\n")
    v2_group(c, "sys/fs/cgroup/svc/app", mx="banana", high="-5", current="lots",
             stat="inactive_file twelve\nrandom\n\n", psi="nonsense\n")
    write(c, "sys/fs/cgroup/svc/memory.events", "oom_kill\n")
    write(c, "sys/fs/cgroup/svc/memory.peak", "")

    # A valid limit and usage but a memory.stat without a usable inactive_file.
    c = "v2_bad_stat"
    proc(c, V2_MOUNTINFO.format(root="/"), "0::/app\n", psi="some avg10=abc\n")
    v2_root(c)
    v2_group(c, "sys/fs/cgroup/app", mx=1 * GIB, current=300 * MIB,
             stat="anon 5\ninactive_file -12\n", psi="some total=1\n")

    # Missing files: no limit files, no usage, no stat, no PSI anywhere.
    c = "v2_missing"
    proc(c, V2_MOUNTINFO.format(root="/"), "0::/app\n", psi=None)
    write(c, "sys/fs/cgroup/cgroup.controllers", "memory\n")
    write(c, "sys/fs/cgroup/app/cgroup.procs", "")

    # No /proc at all: nothing can be read.
    c = "empty"
    write(c, "README", "An empty root: no /proc, no cgroups.\n")

    # The process's cgroup path escapes the mount's root (under a cgroup namespace, paths out of
    # view show as "/.."): the mount point's limit is not the process's.
    c = "v2_escape"
    proc(c, V2_MOUNTINFO.format(root="/kubepods/pod1/ctr"), "0::/../pod2/other\n")
    v2_root(c)
    write(c, "sys/fs/cgroup/memory.max", f"{384 * MIB}\n")
    write(c, "sys/fs/cgroup/memory.high", "max\n")
    write(c, "sys/fs/cgroup/memory.current", f"{50 * MIB}\n")
    write(c, "sys/fs/cgroup/memory.stat", v2_stat({"inactive_file": 10 * MIB}))

    # v1: the mount shows the cgroup /container0, but the process is in /other_container (not
    # below it). /container0's limit is not an ancestor's and cannot bind the process.
    c = "v1_escape"
    proc(c, "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
            "35 31 0:32 /container0 /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n",
         "4:memory:/other_container\n")
    v1_group(c, "sys/fs/cgroup/memory", limit=384 * MIB, usage=50 * MIB,
             stat=v1_stat({"total_inactive_file": 10 * MIB}, hier=384 * MIB))

    # Numbers no machine holds: usage 2^64 - 1 and a statm resident of 2^52 + 1 pages (2^64 +
    # 4096 bytes with 4 KiB pages: 4096 if it wrapped). Neither is believed: no usage at all.
    c = "v2_implausible"
    proc(c, V2_MOUNTINFO.format(root="/"), "0::/app\n",
         statm="4503599627370500 4503599627370497 100 10 0 1 0\n")
    v2_root(c)
    v2_group(c, "sys/fs/cgroup/app", mx=512 * MIB, current=2**64 - 1, peak=2**63,
             stat=v2_stat({"inactive_file": 10 * MIB}))

    # inactive_file larger than usage: the working set stays at usage, never 0.
    c = "v2_inactive_above_usage"
    proc(c, V2_MOUNTINFO.format(root="/"), "0::/app\n")
    v2_root(c)
    v2_group(c, "sys/fs/cgroup/app", mx=512 * MIB, current=100 * MIB,
             stat=v2_stat({"inactive_file": 300 * MIB}))

    # Octal-escaped mount point and several optional fields; super options with spaces.
    c = "v2_octal"
    mi = ("22 27 0:21 / /proc rw,relatime - proc proc rw\n"
          "31 23 0:28 / /sys/fs/my\\040cgroup\\134x rw,relatime shared:9 master:3 "
          "propagate_from:2 unbindable - cgroup2 cgroup\\040two rw,nsdelegate some option\n")
    proc(c, mi, "0::/app:with:colons\n")
    write(c, "sys/fs/my cgroup\\x/cgroup.controllers", "memory pids\n")
    v2_group(c, "sys/fs/my cgroup\\x/app:with:colons", mx=2 * GIB, current=1 * GIB,
             stat=v2_stat({"inactive_file": 256 * MIB}))

    # memory.stat keys in another order, with unknown keys, and a duplicate (first wins).
    c = "v2_stat_order"
    proc(c, V2_MOUNTINFO.format(root="/"), "0::/app\n")
    v2_root(c)
    v2_group(c, "sys/fs/cgroup/app", mx=1 * GIB, current=400 * MIB,
             stat=("inactive_file 104857600\nbrand_new_key 7\nanon 300000000\n"
                   "zswap 0\nactive_file 1\ninactive_file 1\nfile 200000000\n"))
    c = "v1_stat_order"
    proc(c, "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
         "4:memory:/app\n")
    v1_group(c, "sys/fs/cgroup/memory")
    v1_group(c, "sys/fs/cgroup/memory/app", limit=1 * GIB, usage=400 * MIB,
             stat=("total_inactive_file 52428800\nnew_key 9\nhierarchical_memory_limit "
                   f"{GIB}\ninactive_file 1\ncache 1\n"))


if __name__ == "__main__":
    main()
