"""checks.py: what the Python tests of ingest and preprocess share: a
failure counter whose verdict becomes the exit status, and waiting for a
process with a bound. Import with the tests folder on sys.path:

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from checks import Checks
"""
import subprocess
import sys
import time


class Checks:
    def __init__(self, name):
        self.name = name
        self.failures = 0

    def check(self, cond, what):
        """Counts and prints a failed check; returns cond."""
        if not cond:
            self.failures += 1
            print("FAIL:", what, file=sys.stderr)
        return cond

    def finish(self):
        """Prints the verdict and exits 1 when any check failed, else 0."""
        print(f"{self.name}: {'FAILED' if self.failures else 'all checks passed'} ({self.failures} failures)")
        sys.exit(1 if self.failures else 0)


def wait_process(proc, timeout):
    """Waits for proc (killing it after timeout seconds). Returns (seconds
    waited, stderr bytes)."""
    t0 = time.time()
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return time.time() - t0, err or b""


def wait_for(pred, timeout=30.0, step=0.2):
    """Calls pred until it returns something true (returned) or timeout
    seconds passed (None)."""
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None
