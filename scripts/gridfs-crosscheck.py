#!/usr/bin/env python3
"""Independent GridFS cross-check with pymongo's own gridfs module (not our Rust code).

  gridfs-crosscheck.py URI DATABASE read ID SHA256
      Read file ID from the `documents` bucket with pymongo's GridFSBucket and compare the sha256
      of its bytes with SHA256. Prints the file's length, chunk size, chunk count and filename.
  gridfs-crosscheck.py URI DATABASE write ID FILENAME SIZE SEED
      Write SIZE deterministic bytes (seed SEED) as file ID (a string _id) into the `documents`
      bucket with pymongo's GridFSBucket, with `metadata` taken as JSON from standard input.
      Prints the sha256 of the bytes written.

Prints one JSON object on success; exits non-zero with a message on any mismatch.
Installed by scripts/install-test-deps (pymongo in target/test-venv).
"""

import hashlib
import json
import sys

import gridfs
import pymongo

BUCKET = "documents"


def pseudo_random(size, seed):
    # The same xorshift as the Rust tests' `bytes()`: both sides can regenerate the content.
    x = (seed | 1) & 0xFFFFFFFFFFFFFFFF
    out = bytearray(size)
    for i in range(size):
        x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 7
        x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
        out[i] = x & 0xFF
    return bytes(out)


def main(argv):
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    uri, database, command = argv[1], argv[2], argv[3]
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    db = client[database]
    bucket = gridfs.GridFSBucket(db, bucket_name=BUCKET)

    if command == "read" and len(argv) == 6:
        file_id, want = argv[4], argv[5]
        grid_out = bucket.open_download_stream(file_id)
        digest = hashlib.sha256()
        length = 0
        while True:
            piece = grid_out.readchunk()
            if not piece:
                break
            digest.update(piece)
            length += len(piece)
        chunks = db[BUCKET + ".chunks"].count_documents({"files_id": file_id})
        result = {
            "id": file_id,
            "length": length,
            "declared_length": grid_out.length,
            "chunk_size": grid_out.chunk_size,
            "chunks": chunks,
            "filename": grid_out.filename,
            "sha256": digest.hexdigest(),
        }
        print(json.dumps(result))
        if digest.hexdigest() != want:
            print(f"sha256 mismatch: read {digest.hexdigest()}, expected {want}", file=sys.stderr)
            return 1
        if length != grid_out.length:
            print(f"length mismatch: read {length}, files document says {grid_out.length}", file=sys.stderr)
            return 1
        return 0

    if command == "write" and len(argv) == 8:
        file_id, filename, size, seed = argv[4], argv[5], int(argv[6]), int(argv[7])
        metadata = json.load(sys.stdin)
        data = pseudo_random(size, seed)
        bucket.upload_from_stream_with_id(file_id, filename, data, metadata=metadata)
        print(json.dumps({"id": file_id, "length": size, "sha256": hashlib.sha256(data).hexdigest()}))
        return 0

    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
