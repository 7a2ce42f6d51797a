"""A real `edgeoss serve` process on 127.0.0.1 (an ephemeral port) over a tiny random-weight model
with the real gpt-oss vocabulary; tests talk to it with the official clients."""

import os
import re
import signal
import subprocess
import sys
import threading
import time


class Server:
    """`edgeoss serve MODEL ARGS` in a child process; `url` once it listens."""

    def __init__(self, model, *args, env=None):
        cmd = [sys.executable, "-m", "edgeoss.cli.main", "serve", str(model), "--port", "0", "--threads", "1", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.log: list[str] = []
        self.url = None
        ready = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.log.append(line)
                m = re.search(r"serving \S+ at (http://\S+)/v1", line)
                if m:
                    self.url = m.group(1)
                    ready.set()
            ready.set()
        threading.Thread(target=read, daemon=True).start()
        ready.wait(120)
        if self.url is None:
            self.proc.kill()
            raise RuntimeError("the server did not start:\n" + "".join(self.log))

    def client(self, **kw):
        import openai
        kw.setdefault("api_key", "unused")
        return openai.OpenAI(base_url=self.url + "/v1", max_retries=0, timeout=120, **kw)

    def stop(self, timeout=30) -> int:
        """Ctrl-C, as a user stops it; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def wait_for(predicate, timeout=30.0, every=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every)
    return False
