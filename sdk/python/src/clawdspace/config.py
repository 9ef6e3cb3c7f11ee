"""Where the SDK finds its server and key, the same way the `clawdspace` CLI does.

Precedence: arguments > environment > `~/.clawdspace` > built-in defaults.

* Key: `CLAWDSPACE_KEY` (environment, then the file), then `API_KEY` in the
  file, then a local daemon's key file (`$CLAWDSPACE_STATE_DIR/api-key`,
  default `/var/lib/clawdspace/api-key`, readable by root), then
  `clawdspace_dev_key`.
* Server: `CLAWDSPACE_URL` (environment), else the first of
  `CLAWDSPACE_HOSTS` (environment, then the file; `KNOWN_HOSTS` in the file),
  else `localhost`. A host entry is a name or IP (port 7777), `host:port`, or
  an `http(s)://` URL.

The file is shell-assignment syntax (`[export ]NAME=value`, quotes, `#`
comments, `$NAME` expansion); it is parsed, never executed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

DEFAULT_PORT = 7777
DEV_KEY = "clawdspace_dev_key"
DEFAULT_STATE_DIR = "/var/lib/clawdspace"
DEFAULT_HOSTS = "localhost"

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_config(text: str, env: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Parses `~/.clawdspace` text into `{NAME: value}` (the last assignment wins).

    `$NAME`/`${NAME}` expand from earlier assignments, then from `env`;
    command substitutions are kept literally, never run.
    """
    env = os.environ if env is None else env
    out: Dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export") and line[6:7].isspace():
            line = line[6:].lstrip()
        name, eq, rest = line.partition("=")
        if not eq or not _NAME.match(name):
            continue

        def lookup(n: str) -> str:
            return out.get(n, env.get(n, ""))

        out[name] = _parse_value(rest, lookup)
    return out


def _parse_value(s: str, lookup: Callable[[str], str]) -> str:
    out: List[str] = []
    i = 0

    def dollar(i: int) -> int:
        # s[i] == "$": expands a variable; returns the index after it.
        if s[i + 1 : i + 2] == "{":
            end = s.find("}", i + 2)
            if end > i + 2 and re.fullmatch(r"[A-Za-z0-9_]+", s[i + 2 : end]):
                out.append(lookup(s[i + 2 : end]))
                return end + 1
        m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", s[i + 1 :])
        if m:
            out.append(lookup(m.group(0)))
            return i + 1 + m.end()
        out.append("$")
        return i + 1

    while i < len(s):
        c = s[i]
        if c == "'":
            end = s.find("'", i + 1)
            end = len(s) if end < 0 else end
            out.append(s[i + 1 : end])
            i = end + 1
        elif c == '"':
            i += 1
            while i < len(s) and s[i] != '"':
                if s[i] == "\\" and s[i + 1 : i + 2] in ('"', "\\", "$", "`"):
                    out.append(s[i + 1])
                    i += 2
                elif s[i] == "$":
                    i = dollar(i)
                else:
                    out.append(s[i])
                    i += 1
            i += 1
        elif c == "\\":
            out.append(s[i + 1 : i + 2])
            i += 2
        elif c == "$":
            i = dollar(i)
        elif c.isspace():
            break
        else:
            out.append(c)
            i += 1
    return "".join(out)


def split_hosts(s: str) -> List[str]:
    """Splits a host list (whitespace or commas)."""
    return [h for h in re.split(r"[\s,]+", s) if h]


def host_url(host: str) -> str:
    """Base URL of a host entry: a URL as given, `host:port`, or `host` on port 7777."""
    lower = host.lower()
    if lower.startswith(("http://", "https://")):
        return host.rstrip("/")
    if host.startswith("["):
        return f"http://{host}" if "]:" in host else f"http://{host}:{DEFAULT_PORT}"
    colons = host.count(":")
    if colons == 0:
        return f"http://{host}:{DEFAULT_PORT}"
    if colons == 1:
        return f"http://{host}"
    return f"http://[{host}]:{DEFAULT_PORT}"


@dataclass
class Settings:
    """The resolved configuration."""

    key: str
    hosts: List[str] = field(default_factory=list)
    url: Optional[str] = None

    @property
    def urls(self) -> List[str]:
        """Base URLs of every configured server (`url` first when set)."""
        urls = [self.url] if self.url else []
        urls += [host_url(h) for h in self.hosts if host_url(h) not in urls]
        return urls


def _nonempty(v: Optional[str]) -> Optional[str]:
    return v if v is not None and v.strip() else None


def load_settings(
    env: Optional[Mapping[str, str]] = None, home: Optional[Path] = None
) -> Settings:
    """Reads the environment and `~/.clawdspace` as the CLI does."""
    env = os.environ if env is None else env
    home = home if home is not None else Path(env.get("HOME") or Path.home())
    try:
        text = (home / ".clawdspace").read_text()
    except OSError:
        text = ""
    file = {k: v for k, v in parse_config(text, env).items() if v.strip()}
    key = (
        _nonempty(env.get("CLAWDSPACE_KEY"))
        or file.get("CLAWDSPACE_KEY")
        or file.get("API_KEY")
        or _local_key(env)
        or DEV_KEY
    )
    hosts_text = (
        _nonempty(env.get("CLAWDSPACE_HOSTS"))
        or file.get("CLAWDSPACE_HOSTS")
        or file.get("KNOWN_HOSTS")
        or DEFAULT_HOSTS
    )
    url = _nonempty(env.get("CLAWDSPACE_URL"))
    return Settings(key=key, hosts=split_hosts(hosts_text), url=url.rstrip("/") if url else None)


def _local_key(env: Mapping[str, str]) -> Optional[str]:
    state = env.get("CLAWDSPACE_STATE_DIR") or DEFAULT_STATE_DIR
    try:
        key = (Path(state) / "api-key").read_text().strip()
    except OSError:
        return None
    return key or None


def resolve(url: Optional[str], key: Optional[str]) -> Tuple[str, str]:
    """The base URL and key to use: the arguments where given, else the configuration."""
    if url is not None and key is not None:
        return host_url(url), key
    s = load_settings()
    return host_url(url) if url else s.urls[0], key if key is not None else s.key
