#!/usr/bin/python3
"""A control plane nobody on the accessd team wrote: paho-mqtt + PyNaCl,
following PROTOCOL.md only. It signs commands (DSSE v1, Ed25519), seals
passwords to the agent (crypto_box_seal), publishes them over MQTT (QoS 1),
and verifies every result with the agent's public key.

Usage (agent/tests/mqtt_daemon.rs runs it):
  control_plane.py --host 127.0.0.1 --port N --username U --password-file F \
      --instance ID --key-seed-file CP.key --keyid cp --agent-key B64 OPS.json

OPS.json: [{"id": "...", "op": "...", "args": {...}}, ...]; an argument
{"seal": "text"} is replaced by {"sealed": base64(SealedBox(agent).encrypt(text))}.
Prints one line per command: the verified result payload (JSON), in the
order the commands were sent. Exits 1 if a result is missing or does not verify.
"""

import argparse
import base64
import datetime
import json
import queue
import sys

import paho.mqtt.client as mqtt
from nacl.public import SealedBox
from nacl.signing import SigningKey, VerifyKey

COMMAND_TYPE = b"application/vnd.accessd.command.v1+json"
RESULT_TYPE = b"application/vnd.accessd.result.v1+json"


def pae(payload_type: bytes, body: bytes) -> bytes:
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type, len(body), body)


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def rfc3339(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def seal_args(value, agent: VerifyKey):
    if isinstance(value, dict):
        if set(value) == {"seal"}:
            box = SealedBox(agent.to_curve25519_public_key())
            return {"sealed": b64(box.encrypt(value["seal"].encode()))}
        return {k: seal_args(v, agent) for k, v in value.items()}
    if isinstance(value, list):
        return [seal_args(v, agent) for v in value]
    return value


def command_envelope(key: SigningKey, keyid: str, instance: str, cmd, agent: VerifyKey) -> bytes:
    now = datetime.datetime.now(datetime.timezone.utc)
    payload = json.dumps({
        "v": 1,
        "id": cmd["id"],
        "instance_id": instance,
        "issued_at": rfc3339(now),
        "expires_at": rfc3339(now + datetime.timedelta(minutes=10)),
        "op": cmd["op"],
        "args": seal_args(cmd.get("args", {}), agent),
    }).encode()
    sig = key.sign(pae(COMMAND_TYPE, payload)).signature
    return json.dumps({
        "payloadType": COMMAND_TYPE.decode(),
        "payload": b64(payload),
        "signatures": [{"keyid": keyid, "sig": b64(sig)}],
    }).encode()


def verify_result(agent: VerifyKey, raw: bytes) -> dict:
    env = json.loads(raw)
    if env.get("payloadType") != RESULT_TYPE.decode():
        raise ValueError("not a result envelope")
    body = base64.b64decode(env["payload"])
    for s in env.get("signatures", []):
        try:
            agent.verify(pae(RESULT_TYPE, body), base64.b64decode(s["sig"]))
            return json.loads(body)
        except Exception:
            continue
    raise ValueError("no signature verifies with the agent key")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--username", required=True)
    ap.add_argument("--password-file", required=True)
    ap.add_argument("--instance", required=True)
    ap.add_argument("--prefix", default="accessd")
    ap.add_argument("--key-seed-file", required=True)
    ap.add_argument("--keyid", required=True)
    ap.add_argument("--agent-key", required=True)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("ops")
    a = ap.parse_args()

    key = SigningKey(base64.b64decode(open(a.key_seed_file).read().strip()))
    agent = VerifyKey(base64.b64decode(a.agent_key))
    ops = json.load(open(a.ops))
    password = open(a.password_file).read().strip()
    commands = f"{a.prefix}/{a.instance}/commands"
    results = f"{a.prefix}/{a.instance}/results"

    inbox: "queue.Queue[bytes]" = queue.Queue()
    subscribed: "queue.Queue[int]" = queue.Queue()
    client = mqtt.Client(client_id="py-control-plane", clean_session=True)
    client.username_pw_set(a.username, password)
    client.on_connect = lambda c, u, f, rc: c.subscribe(results, qos=1)
    client.on_subscribe = lambda c, u, mid, granted: subscribed.put(granted[0])
    client.on_message = lambda c, u, msg: inbox.put(msg.payload)
    client.connect(a.host, a.port, keepalive=30)
    client.loop_start()
    try:
        granted = subscribed.get(timeout=a.timeout)
        if granted == 0x80:
            print("subscription refused", file=sys.stderr)
            return 1
        for cmd in ops:
            client.publish(commands, command_envelope(key, a.keyid, a.instance, cmd, agent), qos=1)
            # One at a time, as an operator's console would: wait for this
            # command's verified result before sending the next.
            while True:
                raw = inbox.get(timeout=a.timeout)
                try:
                    r = verify_result(agent, raw)
                except Exception as e:
                    print(f"ignoring an unverifiable result: {e}", file=sys.stderr)
                    continue
                if r.get("id") == cmd["id"]:
                    print(json.dumps(r), flush=True)
                    break
    except queue.Empty:
        print("timed out waiting for a result", file=sys.stderr)
        return 1
    finally:
        client.loop_stop()
        client.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
