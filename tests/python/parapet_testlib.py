"""Helpers shared by the client-compatibility tests (raw HTTP access, bounded listing)."""

import itertools
import json
import urllib.error
import urllib.parse
import urllib.request


class RawApi:
    """Plain urllib access to the v4 API, to check what the server stored and sent
    independently of any client library."""

    def __init__(self, base, token):
        self.base = base.rstrip("/")
        self.token = token

    def call(self, method, path, body=None, query=None, token=None):
        """Returns (HTTP status, decoded JSON body or text)."""
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None
        headers = {"Authorization": "Bearer " + (token or self.token)}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, raw, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            status, raw, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
        if "json" in ctype:
            return status, json.loads(raw)
        return status, raw.decode("utf-8", "replace")

    def ok(self, method, path, body=None, query=None):
        """The whole envelope of a call that must succeed."""
        status, env = self.call(method, path, body=body, query=query)
        assert 200 <= status < 300, (method, path, status, env)
        assert isinstance(env, dict) and env.get("success") is True, env
        assert env.get("errors") == [], env
        assert isinstance(env.get("messages"), list), env
        return env

    def result(self, method, path, body=None, query=None):
        return self.ok(method, path, body=body, query=query)["result"]


def collect(iterable, limit=1000):
    """Lists an auto-paginating iterator, failing instead of hanging if the server never
    ends the listing (the SDK stops only at an empty page)."""
    items = list(itertools.islice(iterable, limit + 1))
    assert len(items) <= limit, "listing did not end after %d items: pagination never stops" % limit
    return items


def zone_file_records(text):
    """The resource records of a BIND zone file as a set of (owner, type, rdata) with
    absolute, lower-case owners ending in a dot and rdata whitespace-normalised.
    Understands $ORIGIN, '@', relative owners, blank owners (the previous one), an optional
    TTL and class, and ';' comments outside quotes. Enough for an exported zone."""
    records = set()
    origin = None
    owner = None
    for line in _logical_lines(text):
        tokens = line.split()
        if tokens[0].upper() == "$ORIGIN":
            origin = tokens[1].lower()
            continue
        if tokens[0].startswith("$"):
            continue
        if line[0].isspace():
            rest = tokens
        else:
            owner = _absolute(tokens[0], origin)
            rest = tokens[1:]
        # Skip an optional TTL and class, in either order.
        while rest and (rest[0].isdigit() or rest[0].upper() in ("IN", "CH", "HS")):
            rest = rest[1:]
        if not rest or owner is None:
            continue
        records.add((owner, rest[0].upper(), " ".join(rest[1:])))
    return records


def _logical_lines(text):
    """Comment-free lines, with parenthesised continuations joined into one line."""
    pending = ""
    for line in text.splitlines():
        line = _strip_comment(line)
        if pending:
            pending += " " + line
        elif line.strip():
            pending = line
        else:
            continue
        if _unquoted(pending).count("(") <= _unquoted(pending).count(")"):
            yield pending.replace("(", " ").replace(")", " ") if "(" in _unquoted(pending) else pending
            pending = ""
    if pending:
        yield pending


def _unquoted(line):
    out, quoted = [], False
    for c in line:
        if c == '"':
            quoted = not quoted
        elif not quoted:
            out.append(c)
    return "".join(out)


def _absolute(name, origin):
    name = name.lower()
    if name == "@":
        return origin
    if name.endswith("."):
        return name
    return name + "." + (origin or "")


def _strip_comment(line):
    quoted = False
    escaped = False
    for i, c in enumerate(line):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == ";" and not quoted:
            return line[:i]
    return line


def zone_file_comments(text):
    """Maps each record line's (owner-less) rdata tail to its trailing comment, for checks on
    Cloudflare's `cf_tags=` annotations. Returns a list of (line, comment)."""
    out = []
    for line in text.splitlines():
        body = _strip_comment(line)
        if len(body) < len(line):
            out.append((body.strip(), line[len(body) + 1:].strip()))
    return out


# Cloudflare's permission group id for "DNS Write" (Zone > DNS > Edit); the name is sent too.
DNS_WRITE_GROUP = {"id": "4755a26eedb94da69e1066d98aa820be", "name": "DNS Write"}


def create_dns_token(raw, zone_id, name="dns-edit"):
    """Creates, with the raw API, a token that may only edit DNS of one zone (what
    certbot-dns-cloudflare's docs ask for). Returns (token id, secret)."""
    body = {
        "name": name,
        "policies": [{
            "effect": "allow",
            "resources": {"com.cloudflare.api.account.zone." + zone_id: "*"},
            "permission_groups": [DNS_WRITE_GROUP],
        }],
    }
    result = raw.result("POST", "/user/tokens", body=body)
    return result["id"], result["value"]
