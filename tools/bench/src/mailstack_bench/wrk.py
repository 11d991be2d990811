"""Load from wrk (an established HTTP load tool, C and LuaJIT), driven from Python.

One Lua script serves every run: it sets the method, body and headers, optionally paces each
connection (to hold a rate below the maximum), counts status codes, and prints one JSON line
of results at the end, which `run` parses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_SCRIPT = r"""
local method, body, auth, pace_ms = os.getenv("WRK_METHOD"), os.getenv("WRK_BODY"),
  os.getenv("WRK_AUTH"), tonumber(os.getenv("WRK_PACE_MS") or "0")
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  statuses = {}
  wrk.method = method
  if body and body ~= "" then
    wrk.body = body
    wrk.headers["Content-Type"] = "application/json"
  end
  if auth and auth ~= "" then wrk.headers["Authorization"] = "Bearer " .. auth end
end
if pace_ms > 0 then function delay() return pace_ms end end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    for code, n in pairs(s) do counts[tostring(code)] = (counts[tostring(code)] or 0) + n end
  end
  local parts = {}
  for code, n in pairs(counts) do table.insert(parts, string.format('"%s": %d', code, n)) end
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "seconds": %f, "errors": %d, "p50_ms": %f, "p90_ms": %f,'
    .. ' "p99_ms": %f, "statuses": {%s}}\n',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3, latency:percentile(99) / 1e3,
    table.concat(parts, ", ")))
end
"""


class WrkMissingError(RuntimeError):
    """wrk is not installed and could not be installed."""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    statuses: dict[str, int]

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    def share(self, status: int) -> float:
        return self.statuses.get(str(status), 0) / max(1, self.requests)


def ensure_wrk() -> str:
    """The path of wrk; installs Debian's package when missing and allowed (root + apt-get)."""
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt and os.geteuid() == 0:
        subprocess.run([apt, "install", "-y", "--no-install-recommends", "wrk"], check=False)
        found = shutil.which("wrk")
        if found:
            return found
    raise WrkMissingError(
        "make bench drives load with wrk: install it (Debian/Ubuntu `apt-get install wrk`, "
        "macOS `brew install wrk`) and run it again"
    )


def run(
    url: str,
    *,
    seconds: float,
    connections: int,
    threads: int = 2,
    method: str = "GET",
    body: str = "",
    api_key: str = "",
    pace_ms: float = 0.0,
) -> WrkResult:
    """Load `url` for `seconds`; `pace_ms` makes each connection wait between requests."""
    wrk = ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="mailstack-wrk-") as folder:
        script = Path(folder) / "load.lua"
        script.write_text(_SCRIPT)
        env = {
            **os.environ,
            "WRK_METHOD": method,
            "WRK_BODY": body,
            "WRK_AUTH": api_key,
            "WRK_PACE_MS": f"{pace_ms:.3f}",
        }
        done = subprocess.run(
            [
                wrk,
                f"-t{min(threads, connections)}",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                str(script),
                url,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=seconds + 60,
        )
    for line in done.stdout.splitlines():
        if line.startswith("WRK_RESULT "):
            values = json.loads(line.removeprefix("WRK_RESULT "))
            return WrkResult(**values)
    raise RuntimeError(f"wrk gave no result (exit {done.returncode}): {done.stderr[-500:]}")
