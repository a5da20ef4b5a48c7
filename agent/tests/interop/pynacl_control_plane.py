#!/usr/bin/env python3
"""A control plane written with PyNaCl (libsodium) and nothing from accessd.

It follows PROTOCOL.md alone, so accessd's interop test can show that an
implementation nobody on the project wrote can drive the agent:

  sign    stdin: {"seed", "keyid", "agent_pub", "commands": [payload, ...]}
          A value {"$seal": "pw"} anywhere in a payload becomes
          {"sealed": base64(crypto_box_seal(pw, agent X25519 key))}.
          stdout: one DSSE envelope per line. Odd-numbered envelopes use the
          URL-safe base64 alphabet without padding (DSSE allows both).
  verify  stdin: {"agent_pub", "envelopes": [str, ...]}
          Checks each result envelope (payloadType, keyid "agent", Ed25519
          over PAE) and prints the list of payloads as JSON.
  crypt   stdin: {"hash", "password"}; prints true if crypt(3) agrees.
"""

import base64
import json
import sys
import warnings

import nacl.encoding
import nacl.public
import nacl.signing

COMMAND_TYPE = "application/vnd.accessd.command.v1+json"
RESULT_TYPE = "application/vnd.accessd.result.v1+json"


def pae(payload_type: str, body: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


def seal_values(value, box):
    if isinstance(value, dict):
        if set(value) == {"$seal"}:
            sealed = box.encrypt(value["$seal"].encode())
            return {"sealed": base64.b64encode(sealed).decode()}
        return {k: seal_values(v, box) for k, v in value.items()}
    if isinstance(value, list):
        return [seal_values(v, box) for v in value]
    return value


def b64(data: bytes, urlsafe: bool) -> str:
    if urlsafe:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")
    return base64.b64encode(data).decode()


def sign(req):
    key = nacl.signing.SigningKey(base64.b64decode(req["seed"]))
    agent = nacl.signing.VerifyKey(base64.b64decode(req["agent_pub"]))
    box = nacl.public.SealedBox(agent.to_curve25519_public_key())
    for i, payload in enumerate(req["commands"]):
        body = json.dumps(seal_values(payload, box), separators=(",", ":")).encode()
        sig = key.sign(pae(COMMAND_TYPE, body)).signature
        urlsafe = i % 2 == 1
        env = {
            "payloadType": COMMAND_TYPE,
            "payload": b64(body, urlsafe),
            "signatures": [{"keyid": req["keyid"], "sig": b64(sig, urlsafe)}],
        }
        print(json.dumps(env))


def verify(req):
    agent = nacl.signing.VerifyKey(base64.b64decode(req["agent_pub"]))
    out = []
    for text in req["envelopes"]:
        env = json.loads(text)
        assert env["payloadType"] == RESULT_TYPE, env["payloadType"]
        (sig,) = env["signatures"]
        assert sig["keyid"] == "agent", sig
        body = base64.b64decode(env["payload"])
        # Raises nacl.exceptions.BadSignatureError if it does not verify.
        agent.verify(pae(RESULT_TYPE, body), base64.b64decode(sig["sig"]))
        out.append(json.loads(body))
    print(json.dumps(out))


def check_crypt(req):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # removed in Python 3.13; Debian 12 has 3.11
    print(json.dumps(crypt.crypt(req["password"], req["hash"]) == req["hash"]))


if __name__ == "__main__":
    mode = sys.argv[1]
    request = json.load(sys.stdin)
    {"sign": sign, "verify": verify, "crypt": check_crypt}[mode](request)
