#!/usr/bin/env python3
"""A receiver for lorapki FRMPayloads written from PROTOCOL.md §3 and §4 alone (standard library
only): an oracle for the fragment vectors of §11, independent of the Rust implementation.

Usage: reassemble.py SESSION  (the receiver's current session number, 0..=63)

Reads FRMPayloads from standard input, one hex string per line, in arrival order. Parses each
left to right (§3); a whole command is printed as `command <hex>`; a Fragment goes to the
reassembler (§4), which prints `command <hex>` when an inner command is complete and
`reject <Error>` (the names of the table of §4) when it refuses a fragment. Parsing problems are
printed as `stop unknown-cid <cid>` / `stop truncated <cid>`. A line `reset` starts a new
receiver (empty reassembler) and is echoed, so that one run can check several sequences.
"""

import sys

MAX_COMMAND_LEN = 51
FRAGMENTABLE = {0x01, 0x02, 0x03, 0x07}
SLOTS = 3


def command_len(payload, at):
    """The length of the command at `payload[at]` (§3.2), None for an unknown CID or PubKeyAns
    with PART 3, "fragment" for a Fragment (it runs to the end of the FRMPayload)."""
    cid = payload[at]
    if cid == 0x02:
        if at + 1 >= len(payload):
            return 51  # truncated either way
        return {0: 51, 1: 51, 2: 49}.get(payload[at + 1] & 0b11)
    return {0x01: 51, 0x03: 50, 0x04: 2, 0x05: 1, 0x07: 3, 0x08: "fragment"}.get(cid)


def inner_len(buffer, have):
    """The inner command's length once its CID (and for PubKeyAns its PART) has arrived."""
    if not have[0]:
        return None
    if buffer[0] == 0x02:
        if not have[1]:
            return None
        return {0: 51, 1: 51, 2: 49}.get(buffer[1] & 0b11, "bad")
    return {0x01: 51, 0x03: 50, 0x07: 3}.get(buffer[0], "bad")


class Reassembler:
    def __init__(self, session):
        self.session = session
        self.slots = {}  # (session, fid) -> (buffer, have)

    def fragment(self, body):
        """`body` is the Fragment without its CID: FHDR, OFFSET, DATA."""
        if len(body) < 3:
            return "reject Truncated"
        session, fid, offset, data = body[0] >> 2, body[0] & 0b11, body[1], body[2:]
        if session != self.session:
            return "reject OutOfSession"
        if len(data) > MAX_COMMAND_LEN:
            return "reject Oversize"
        if offset + len(data) > MAX_COMMAND_LEN:
            return "reject OutOfRange"
        key = (session, fid)
        if key in self.slots:
            buffer, have = self.slots[key]
        else:
            buffer, have = bytearray(MAX_COMMAND_LEN), [False] * MAX_COMMAND_LEN
        new_buffer, new_have = bytearray(buffer), list(have)
        fresh = False
        for i, byte in enumerate(data):
            if have[offset + i]:
                if buffer[offset + i] != byte:
                    return "reject Inconsistent"
            else:
                new_buffer[offset + i], new_have[offset + i] = byte, True
                fresh = True
        if not fresh:
            return "reject Duplicate"
        length = inner_len(new_buffer, new_have)
        if length == "bad":
            return "reject BadInner"
        if length is not None and any(new_have[length:]):
            return "reject OutOfRange"
        if key not in self.slots and len(self.slots) >= SLOTS:
            return "reject NoFreeSlot"
        if length is not None and all(new_have[:length]):
            self.slots.pop(key, None)
            return "command " + bytes(new_buffer[:length]).hex()
        self.slots[key] = (new_buffer, new_have)
        return None


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    receiver = Reassembler(int(sys.argv[1]))
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        if line == "reset":
            receiver = Reassembler(receiver.session)
            print("reset")
            continue
        payload = bytes.fromhex(line)
        at = 0
        while at < len(payload):
            length = command_len(payload, at)
            if length is None:
                print(f"stop unknown-cid {payload[at]:02x}")
                break
            if length == "fragment":
                answer = receiver.fragment(payload[at + 1 :])
                if answer:
                    print(answer)
                break
            if at + length > len(payload):
                print(f"stop truncated {payload[at]:02x}")
                break
            print("command " + payload[at : at + length].hex())
            at += length
    return 0


if __name__ == "__main__":
    sys.exit(main())
