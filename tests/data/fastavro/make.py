"""Currents-style Avro files written by a different Avro implementation (fastavro 1.13, Python),
one per codec, for tests/it/ingest.rs. Regenerate with:

    python3 -m venv /tmp/fa && /tmp/fa/bin/pip install fastavro cramjam backports.zstd
    /tmp/fa/bin/python tests/data/fastavro/make.py

Each file holds the same four push Open events (ids fa-<codec>-0..3, time 1795773600 + i*3600,
i.e. 2026-11-27 10:00 UTC onward), one of them with a null external_user_id and a nested map
field, so the test can check every value.
"""
import os

import fastavro

SCHEMA = {
    "type": "record", "name": "PushNotificationOpenEvent", "namespace": "com.braze.currents",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "user_id", "type": "string"},
        {"name": "external_user_id", "type": ["null", "string"], "default": None},
        {"name": "time", "type": "int"},
        {"name": "timezone", "type": ["null", "string"], "default": None},
        {"name": "app_id", "type": "string"},
        {"name": "campaign_id", "type": ["null", "string"], "default": None},
        {"name": "campaign_name", "type": ["null", "string"], "default": None},
        {"name": "platform", "type": ["null", "string"], "default": None},
        {"name": "device_id", "type": ["null", "string"], "default": None},
        {"name": "ad_tracking_enabled", "type": ["null", "boolean"], "default": None},
        {"name": "extras", "type": ["null", {"type": "map", "values": "string"}], "default": None},
    ],
}

HERE = os.path.dirname(os.path.abspath(__file__))
for codec in ["null", "deflate", "snappy", "zstandard"]:
    records = []
    for i in range(4):
        records.append({
            "id": f"fa-{codec}-{i}",
            "user_id": f"braze-{i}",
            "external_user_id": None if i == 3 else f"u{i:09d}",
            "time": 1795773600 + i * 3600,
            "timezone": "Europe/Paris",
            "app_id": "app-android",
            "campaign_id": "camp-9",
            "campaign_name": "Ünïcode \"quoted\" campaign",
            "platform": "android",
            "device_id": f"dev-{i}",
            "ad_tracking_enabled": i % 2 == 0,
            "extras": {"b": "2", "a": "1"} if i == 3 else None,
        })
    path = os.path.join(HERE, f"open-{codec}.avro")
    with open(path, "wb") as out:
        # Two blocks per file (sync_interval small), to cross a block boundary.
        fastavro.writer(out, fastavro.parse_schema(SCHEMA), records, codec=codec, sync_interval=200)
    print(path, os.path.getsize(path))
