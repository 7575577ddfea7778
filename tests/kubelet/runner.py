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
import json
import os
import signal
import socket
import subprocess
import sys
import time


def main():
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
    for m in spec.get("mounts", []):
        r = subprocess.run(["mount", "--bind", m["src"], m["dst"]], capture_output=True, text=True)
        if r.returncode != 0:
            fail("mount %s -> %s: %s" % (m["src"], m["dst"], r.stderr.strip()))
        if m.get("ro"):
            subprocess.run(["mount", "-o", "remount,bind,ro", m["dst"]], check=False)
    if spec.get("workdir"):
        try:
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
    tmp = spec["exit_file"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"exitCode": code, "signal": sig, "message": msg,
                   "finishedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, f)
    os.rename(tmp, spec["exit_file"])


if __name__ == "__main__":
    main()
