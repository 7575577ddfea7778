#!/usr/bin/env python3
"""Container runner of the process kubelet (see kubelet.py and docs/testing.md).

Started by the kubelet as
    ip netns exec <pod-netns> unshare --uts -- python3 runner.py <spec.json>
so it already runs in the pod's network namespace and in a fresh mount
namespace whose root is a slave of the host's (ip netns exec does that): bind
mounts made here are private to this container and vanish with it.

It sets the hostname, bind-mounts the volumes at their mountPaths, forks the
container's process, forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT to it, waits, and
writes the exit status to spec["exit_file"] (the kubelet may have been
restarted meanwhile and then cannot wait() for us).
"""
import ctypes
import ctypes.util
import json
import os
import signal
import socket
import sys
import time

LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
LIBC.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC = 1, 32, 4096, 16384
EXIT_DIR_FD = None


def main():
    global EXIT_DIR_FD
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    try:
        os.unlink(spec["exit_file"])
    except FileNotFoundError:
        pass

    def fail(msg, code=128):
        sys.stderr.write("runner: %s\n" % msg)
        sys.stderr.flush()
        write_exit(spec, code, None, msg)
        sys.exit(code)

    if spec.get("hostname"):
        try:
            socket.sethostname(spec["hostname"])
        except OSError as e:
            fail("sethostname: %s" % e)
    # Open every volume source (and the directory of the exit file) before mounting
    # anything: a volume mounted at e.g. /tmp would otherwise hide the sources that
    # live under the kubelet's state dir. Mount through /proc/self/fd/N.
    EXIT_DIR_FD = os.open(os.path.dirname(spec["exit_file"]), os.O_RDONLY | os.O_DIRECTORY)
    mounts = spec.get("mounts", [])
    fds = []
    for m in mounts:
        try:
            fds.append(os.open(m["src"], os.O_PATH))
        except OSError as e:
            fail("volume source %s: %s" % (m["src"], e))
    for m, fd in zip(mounts, fds, strict=True):
        dst = m["dst"]
        if not os.path.lexists(dst):  # only under another volume: the kubelet made the others
            try:
                if os.path.isdir("/proc/self/fd/%d" % fd):
                    os.makedirs(dst, exist_ok=True)
                else:
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    open(dst, "a").close()
            except OSError as e:
                fail("mount point %s: %s" % (dst, e))
        if LIBC.mount(("/proc/self/fd/%d" % fd).encode(), dst.encode(), None, MS_BIND | MS_REC, None) != 0:
            fail("mount %s -> %s: %s" % (m["src"], dst, os.strerror(ctypes.get_errno())))
        if m.get("ro") and LIBC.mount(None, dst.encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, None) != 0:
            fail("remount %s read-only: %s" % (dst, os.strerror(ctypes.get_errno())))
        os.close(fd)
    if spec.get("workdir"):
        try:
            os.makedirs(spec["workdir"], exist_ok=True)  # if under a volume; else the kubelet made it
            os.chdir(spec["workdir"])
        except OSError as e:
            fail("workingDir %s: %s" % (spec["workdir"], e))

    argv = spec["argv"]
    env = spec["env"]
    pid = os.fork()
    if pid == 0:
        try:
            for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
                signal.signal(s, signal.SIG_DFL)
            os.execvpe(argv[0], argv, env)
        except OSError as e:
            sys.stderr.write("runner: exec %s: %s\n" % (argv[0], e))
            sys.stderr.flush()
        os._exit(127)

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(s, forward)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            status = 0
            break
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        write_exit(spec, 128 + sig, sig, None)
        sys.exit(128 + sig)
    code = os.WEXITSTATUS(status)
    write_exit(spec, code, None, "exec failed" if code == 127 else None)
    sys.exit(code)


def write_exit(spec, code, sig, msg):
    name = os.path.basename(spec["exit_file"])
    dfd = EXIT_DIR_FD
    if dfd is None:
        dfd = os.open(os.path.dirname(spec["exit_file"]), os.O_RDONLY | os.O_DIRECTORY)
    fd = os.open(name + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dfd)
    with os.fdopen(fd, "w") as f:
        json.dump({"exitCode": code, "signal": sig, "message": msg,
                   "finishedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, f)
    os.rename(name + ".tmp", name, src_dir_fd=dfd, dst_dir_fd=dfd)


if __name__ == "__main__":
    main()
