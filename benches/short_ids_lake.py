#!/usr/bin/env python3
"""A users lake as many teams have one, written by DuckDB (not by cohort-bridge's generator):
ids `u` + 10 digits in no order, spread over files of DuckDB's default row groups.

    short_ids_lake.py OUT USERS [--files 16]

Run with a Python that has duckdb (benches/e2e.py uses the peer's venv). The ids are a
permutation of 0..USERS (i * 7_777_777_777 + 1_234_567 mod 10^10: 7_777_777_777 is coprime with
10^10, so no two users share an id), so they are distinct and in no order, and their last digits
are spread evenly (`half_short.sql` picks by them). Each user also has a country and a signup
time, as a users table would.
"""
import argparse
import os

import duckdb

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("users", type=int)
p.add_argument("--files", type=int, default=16)
args = p.parse_args()
users = os.path.join(args.out, "users")
os.makedirs(users, exist_ok=True)
con = duckdb.connect()
per = -(-args.users // args.files)
for f in range(args.files):
    lo, hi = f * per, min(args.users, (f + 1) * per)
    if lo >= hi:
        break
    con.execute(f"""
        COPY (
          SELECT 'u' || lpad(CAST((i * 7777777777 + 1234567) % 10000000000 AS VARCHAR), 10, '0')
                   AS user_id,
                 ['US', 'DE', 'FR', 'BR', 'IN', 'JP'][1 + CAST(i % 6 AS INTEGER)] AS country,
                 TIMESTAMP '2024-01-01' + to_seconds(CAST((i * 37) % 60000000 AS BIGINT))
                   AS signed_up_at
          FROM range({lo}, {hi}) t(i)
        ) TO '{users}/part-{f:03d}.parquet' (FORMAT parquet)
    """)
