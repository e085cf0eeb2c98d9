#!/usr/bin/env python3
"""Shared-documents benchmark: our HTTP API against pymongo's own GridFS, same FerretDB, same run.

  bench-documents.py --bin BIN --uri MONGODB_URI [--database DB] [--mib 50] [--reps 3]

Starts `BIN serve --dev` on free loopback ports with TELECONSULT_STORAGE__MONGODB_URI=URI, mints a
practitioner's join token with `BIN token --dev` (a practitioner may use the documents API
without being in the call), writes one random file of MIB MiB (a `%PDF-1.4` header, then random
bytes: the server accepts only recognised types), then REPS times, alternating:
  ours:    curl POST multipart (upload), curl GET (download) through /api/consultations/.../documents
  pymongo: GridFSBucket.upload_from_stream / download_to_stream (bucket `bench_pymongo`, 255 KiB
           chunks like ours) on the same database
Every download is checked against the original's sha256. Prints medians, min/max and ours/pymongo
as a markdown table. The token goes to curl in a header file (mode 0600), never on a command line,
and is never printed. Run through scripts/bench-documents (starts FerretDB).
"""

import argparse
import hashlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import gridfs
import pymongo

CHUNK = 255 * 1024  # store/src/lib.rs CHUNK_SIZE


def free_port(kind=socket.SOCK_STREAM):
    import random

    for _ in range(200):
        port = random.randint(20000, 31999)
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise SystemExit("no free port")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--uri", required=True)
    ap.add_argument("--database", default="teleconsult_bench")
    ap.add_argument("--mib", type=int, default=50)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="bench-documents-")
    port, udp = free_port(), free_port(socket.SOCK_DGRAM)
    env = dict(
        os.environ,
        TELECONSULT_SERVER__PORT=str(port),
        TELECONSULT_SERVER__BIND="127.0.0.1",
        TELECONSULT_MEDIA__UDP_PORT=str(udp),
        TELECONSULT_MEDIA__TCP_PORT="0",
        TELECONSULT_MEDIA__BIND="127.0.0.1",
        TELECONSULT_STORAGE__MONGODB_URI=args.uri,
        TELECONSULT_STORAGE__DATABASE=args.database,
        TELECONSULT_STORAGE__DATA_DIR=os.path.join(work, "data"),
    )
    log = open(os.path.join(work, "server.log"), "wb")
    server = subprocess.Popen([args.bin, "serve", "--dev"], env=env, stdout=log, stderr=log, cwd=work)
    base = f"http://127.0.0.1:{port}"
    ok = False
    try:
        for _ in range(300):
            if server.poll() is not None:
                raise SystemExit(f"server exited early; log in {work}/server.log")
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as r:
                    health = json.loads(r.read() or b"{}")
                    if r.status == 200:
                        break
            except Exception:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("server did not answer /healthz")
        if isinstance(health, dict) and health.get("storage") not in (None, "ok"):
            raise SystemExit(f"server storage not ok: {health}")

        consultation = f"bench-docs-{os.getpid()}"
        out = subprocess.run(
            [args.bin, "token", "--dev", "--consultation", consultation, "--identity", "Dr Bench",
             "--role", "practitioner"],
            env=env, capture_output=True, text=True, check=True,
        ).stdout
        m = re.search(r"#token=([A-Za-z0-9_\-.]+)", out)
        if not m:
            raise SystemExit("`teleconsult token` printed no link")
        header = os.path.join(work, "auth.header")
        fd = os.open(header, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"Authorization: Bearer {m.group(1)}\n")
        del out, m

        size = args.mib * 1024 * 1024
        src = os.path.join(work, "bench.pdf")
        with open(src, "wb") as f:
            head = b"%PDF-1.4\n"
            f.write(head)
            left = size - len(head)
            while left:
                n = min(left, 1 << 20)
                f.write(os.urandom(n))
                left -= n
        want = sha256_file(src)
        api = f"{base}/api/consultations/{consultation}/documents"
        dst = os.path.join(work, "down.bin")

        client = pymongo.MongoClient(args.uri)
        bucket = gridfs.GridFSBucket(client[args.database], bucket_name="bench_pymongo",
                                     chunk_size_bytes=CHUNK)
        times = {k: [] for k in ("ours_up", "ours_down", "py_up", "py_down")}

        for rep in range(args.reps):
            # ours: upload
            t = time.perf_counter()
            r = subprocess.run(
                ["curl", "-sS", "-H", f"@{header}", "-F", f"file=@{src};type=application/pdf",
                 "-w", "\n%{http_code}", api],
                capture_output=True, text=True,
            )
            times["ours_up"].append(time.perf_counter() - t)
            body, _, code = r.stdout.rpartition("\n")
            if code != "201":
                raise SystemExit(f"upload failed: HTTP {code} {body[:300]} {r.stderr[:300]}")
            doc = json.loads(body)
            if doc["sha256"] != want or doc["size"] != size:
                raise SystemExit("server reports another sha256/size than the file's")
            # ours: download
            t = time.perf_counter()
            r = subprocess.run(
                ["curl", "-sS", "-f", "-H", f"@{header}", "-o", dst, f"{api}/{doc['id']}"],
                capture_output=True, text=True,
            )
            times["ours_down"].append(time.perf_counter() - t)
            if r.returncode != 0 or sha256_file(dst) != want:
                raise SystemExit(f"download through our API failed or differs: {r.stderr[:300]}")
            os.remove(dst)

            # pymongo GridFS: upload
            t = time.perf_counter()
            with open(src, "rb") as f:
                fid = bucket.upload_from_stream(f"bench-{rep}.pdf", f)
            times["py_up"].append(time.perf_counter() - t)
            # pymongo GridFS: download
            t = time.perf_counter()
            with open(dst, "wb") as f:
                bucket.download_to_stream(fid, f)
            times["py_down"].append(time.perf_counter() - t)
            if sha256_file(dst) != want:
                raise SystemExit("pymongo download differs")
            os.remove(dst)
            print(
                f"rep {rep + 1}: ours up {times['ours_up'][-1]:.2f} s, down {times['ours_down'][-1]:.2f} s; "
                f"pymongo up {times['py_up'][-1]:.2f} s, down {times['py_down'][-1]:.2f} s",
                file=sys.stderr,
            )

        med = {k: statistics.median(v) for k, v in times.items()}
        mib = size / (1024 * 1024)
        print(f"| operation ({args.mib} MiB, {args.reps} runs each) | ours median (min–max) | "
              f"pymongo GridFS median (min–max) | ours / pymongo |")
        print("| --- | --- | --- | --- |")
        for op, a, b in (("upload", "ours_up", "py_up"), ("download", "ours_down", "py_down")):
            print(
                f"| {op} | {med[a]:.2f} s ({min(times[a]):.2f}–{max(times[a]):.2f}), {mib / med[a]:.1f} MiB/s "
                f"| {med[b]:.2f} s ({min(times[b]):.2f}–{max(times[b]):.2f}), {mib / med[b]:.1f} MiB/s "
                f"| {med[a] / med[b]:.2f} |"
            )
        client.close()
        ok = True
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        if ok:
            subprocess.run(["rm", "-rf", work])
        else:
            for name in ("auth.header", "bench.pdf", "down.bin"):
                try:
                    os.remove(os.path.join(work, name))
                except OSError:
                    pass
            print(f"bench-documents: failed; server log kept in {work}/server.log", file=sys.stderr)


if __name__ == "__main__":
    main()
