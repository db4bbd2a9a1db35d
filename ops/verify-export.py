#!/usr/bin/env python3
"""Re-verify an `hpki events export` file with Python's standard library only.

Each event line is {"position": N, "hash": HEX, "body": TEXT}. The chain is
    hash(0) = 32 zero bytes
    hash(n) = SHA-256(hash(n-1) || UTF-8 bytes of body(n))
and the last line is {"end": {"events": N, "head_hash": HEX}}.

Usage: python3 ops/verify-export.py FILE
Exit 0 and "ok: N events, head HEX" when the file is intact; exit 2 naming the first bad line.
Compare the head with a signed checkpoint (`hpki audit verify` lists them) to tie the file to the
audit key.
"""
import hashlib
import json
import sys


def fail(line_no, what):
    print(f"BAD: line {line_no}: {what}")
    sys.exit(2)


def main(path):
    prev = bytes(32)
    line_no = 0
    expected = 1
    ended = False
    with open(path, encoding="utf-8") as f:
        for line_no, text in enumerate(f, start=1):
            if not text.strip():
                continue
            if ended:
                fail(line_no, "a line follows the end line")
            try:
                line = json.loads(text)
            except json.JSONDecodeError as e:
                fail(line_no, f"not JSON: {e}")
            if "end" in line:
                end = line["end"]
                if end["events"] != expected - 1 or end["head_hash"] != prev.hex():
                    fail(line_no, "the end line does not match the events before it")
                ended = True
                continue
            if line.get("position") != expected:
                fail(line_no, f"position {line.get('position')} where {expected} was expected")
            body = line["body"].encode("utf-8")
            if json.loads(body).get("position") != expected:
                fail(line_no, f"position {expected}: the body names another position")
            digest = hashlib.sha256(prev + body).digest()
            if digest.hex() != line["hash"]:
                fail(line_no, f"position {expected}: the hash does not match the body and the previous hash")
            prev = digest
            expected += 1
    if not ended:
        fail(line_no, "no end line: the file is truncated")
    print(f"ok: {expected - 1} events, head {prev.hex()}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(1)
    main(sys.argv[1])
