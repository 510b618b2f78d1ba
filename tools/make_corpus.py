#!/usr/bin/env python3
"""Write the corpus of malformed files (crates/chainrule/tests/corpus/), one folder per
reader. Every file must be refused with a clean error, never a panic, by the library
(tests/hostile_files.rs) and by the CLI (chainrule-cli/tests/hostile_files.rs).

    python3 tools/make_corpus.py
"""
import gzip
import json
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "crates" / "chainrule" / "tests" / "corpus"


def npy(header, data=b"", version=1, magic=b"\x93NUMPY"):
    h = header.encode() if isinstance(header, str) else header
    pad = (64 - (10 + len(h) + 1) % 64) % 64
    h = h + b" " * pad + b"\n"
    size = struct.pack("<H", len(h)) if version == 1 else struct.pack("<I", len(h))
    return magic + bytes([version, 0]) + size + h + data


def safetensors(header, data=b"", length=None):
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(h) if length is None else length) + h + data


def idx(kind, dims, data=b""):
    return bytes([0, 0, kind, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + data


FILES = {
    "npy": {
        "empty.npy": b"",
        "bad_magic.npy": b"NOTNUMPY" + b"\x00" * 100,
        "version_9.npy": npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", b"\0" * 4, version=9),
        "header_length_past_end.npy": b"\x93NUMPY\x01\x00\xff\xff{'descr'",
        "header_not_utf8.npy": npy(b"{'descr': '\xff\xfe', 'fortran_order': False, 'shape': (1,), }", b"\0" * 4),
        "no_descr.npy": npy("{'fortran_order': False, 'shape': (1,), }", b"\0" * 4),
        "complex_dtype.npy": npy("{'descr': '<c16', 'fortran_order': False, 'shape': (1,), }", b"\0" * 16),
        "object_dtype.npy": npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", b"\0" * 8),
        "bad_fortran_order.npy": npy("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,), }", b"\0" * 4),
        "huge_shape.npy": npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000, 1000000000), }", b"\0" * 8),
        "overflowing_shape.npy": npy("{'descr': '<f8', 'fortran_order': False, 'shape': (18446744073709551615, 2), }", b"\0" * 8),
        "negative_shape.npy": npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", b"\0" * 4),
        "garbage_shape.npy": npy("{'descr': '<f4', 'fortran_order': False, 'shape': (a, b), }", b"\0" * 4),
        "truncated_data.npy": npy("{'descr': '<f8', 'fortran_order': False, 'shape': (4, 2), }", b"\0" * 60),
        "trailing_data.npy": npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", b"\0" * 12),
        # Regression: a multi-byte character first in descr made the reader panic (fuzzing).
        # Regression: a 0 among sizes whose other product overflows isize (fuzzing).
        "zero_size_with_huge_sizes_found_by_fuzzing.npy": npy("{'descr': '<f4', 'fortran_order': True, 'shape': (21, 230, 1, 1, 0, 1, 1, 806073709551616, 15, 2), }"),
        # Issue 13: NumPy reads the last of a repeated key; chainrule read the first.
        "duplicate_shape_key.npy": npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'shape': (2,), }", b"\0" * 8),
        "multibyte_descr_found_by_fuzzing.npy": npy("{'descr': '\u02d68', 'fortran_order': False, 'shape': (1844674407370 ,), }", b"\0" * 8),
    },
    "safetensors": {
        "empty.safetensors": b"",
        "short.safetensors": b"\x05\x00\x00",
        "huge_header_length.safetensors": struct.pack("<Q", 1 << 60) + b"{}",
        "header_past_end.safetensors": safetensors({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, length=4096),
        "header_not_json.safetensors": safetensors(b"this is not json at all"),
        "header_not_utf8.safetensors": safetensors(b"{\"\xff\xfe\": 1}"),
        "offsets_past_end.safetensors": safetensors({"0.weight": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4000000]}}, b"\0" * 16),
        "shape_mismatch.safetensors": safetensors({"0.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 8]}}, b"\0" * 8),
        "f16.safetensors": safetensors({"0.weight": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4),
        "i64.safetensors": safetensors({"0.weight": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8),
        "nan_value.safetensors": safetensors({"0.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, struct.pack("<f", float("nan"))),
    },
    "idx": {
        "empty-ubyte": b"",
        "bad_magic-ubyte": b"\x01\x02\x08\x01" + b"\0" * 8,
        "float_type-ubyte": idx(0x0D, [2], b"\0" * 8),
        "truncated_dims-ubyte": bytes([0, 0, 8, 3]) + b"\0\0\0\x02",
        "huge_shape-ubyte": idx(0x08, [0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF], b"\0" * 16),
        "truncated_data-ubyte": idx(0x08, [10, 28, 28], b"\0" * 100),
        "bad_gzip-ubyte.gz": b"\x1f\x8b\x08\x00garbage, not deflate data at all",
        # Regression (issue 13): 18 bytes declaring 2.7 M images once reserved 8 GiB
        # before the declared size was compared with the 2 bytes present.
        "header_of_18_bytes-ubyte": idx(0x08, [2_700_000, 28, 28], b"\0" * 2),
        # Regression (issue 13): a gzip stream declaring 2.7 M images, holding 1 MiB,
        # once reserved the declared 8 GiB of f32 before decompressing.
        "more_images_than_data-ubyte.gz": gzip.compress(idx(0x08, [2_700_000, 28, 28], b"\0" * (1 << 20)), mtime=0),
    },
    "csv": {
        "empty.csv": b"",
        "ragged.csv": b"a,b,label\n1,2,0\n3,0\n",
        "not_a_number.csv": b"a,b,label\n1,2,0\nx,4,1\n",
        "infinite.csv": b"a,b,label\n1,inf,0\n",
        "not_utf8.csv": b"a,b,label\n1,\xff\xfe,0\n",
        "no_label_column.csv": b"a,b,c\n1,2,0\n",
        # Regression (issue 13): one label of 30,000,000 sized the model from it.
        "huge_class.csv": b"a,b,label\n1,2,0\n3,4,30000000\n",
        # Regression (issue 13): 2^64 - 1 overflowed the class count.
        "class_u64_max.csv": b"a,label\n1,0\n2,18446744073709551615\n",
        # Regression (issue 13): no feature column gave "layers[4]: in and out must be at least 1".
        "no_features.csv": b"label\n0\n1\n",
    },
    "model": {
        "not_json.json": b"{layers: [linear]}",
        "deeply_nested.json": b"[" * 100000 + b"]" * 100000,
        "layers_not_array.json": b'{"layers": {"type": "relu"}}',
        "unknown_type.json": b'{"layers": [{"type": "conv2d"}]}',
        "zero_in.json": b'{"layers": [{"type": "linear", "in": 0, "out": 2}]}',
        "string_in.json": b'{"layers": [{"type": "linear", "in": "3", "out": 2}]}',
        "huge_layer.json": b'{"layers": [{"type": "linear", "in": 1000000000, "out": 1000000000}]}',
        "not_utf8.json": b'{"layers": [{"type": "\xff\xfe"}]}',
        "float_size.json": b'{"layers": [{"type": "linear", "in": 2.5, "out": 2}]}',
    },
    # Valid model files whose parameters would not fit in memory: counted, never
    # allocated (summary), and refused before initialising against a short
    # parameters file (grad); tests/bounded_memory.rs in both crates.
    "model_memory": {
        # Regression (issue 13): 55 bytes asking for 46340^2 weights (8.6 GB in f32).
        "46340_squared.json": b'{"layers": [{"type": "linear", "in": 46340, "out": 46340}]}',
    },
    # Valid arrays whose values are refused where they are used: class labels that
    # would size the model, non-finite data (tests/bounded_memory.rs, tests/messages.rs).
    "labels_npy": {
        # Regression (issue 13): a 500-byte .npy label of 30,000,000 sized the model.
        "huge_class.npy": npy("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", struct.pack("<qq", 0, 30_000_000)),
    },
    "train_json": {
        "not_json.json": b"loss = mse",
        "unknown_nested.json": b'{"loss": "mse", "optimizer": {"type": "sgd", "momentum_": 0.9}}',
        "wrong_type.json": b'{"loss": "mse", "optimizer": {"type": "sgd"}, "epochs": "2"}',
        "negative_epochs.json": b'{"loss": "mse", "optimizer": {"type": "sgd"}, "epochs": -1}',
        "huge_number.json": b'{"loss": "mse", "optimizer": {"type": "sgd", "lr": 1e999}}',
    },
    "config_toml": {
        "syntax.toml": b"epochs = [\n",
        "unknown_field.toml": b"epochz = 3\n",
        "wrong_type.toml": b"epochs = \"many\"\n",
        "not_utf8.toml": b"data = \"\xff\xfe\"\n",
    },
}


def main():
    count = 0
    for folder, files in FILES.items():
        (ROOT / folder).mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            (ROOT / folder / name).write_bytes(content)
            count += 1
    print(f"wrote {count} malformed files to {ROOT}")


if __name__ == "__main__":
    main()
