"""Baseline: read A's and B's tensor for every key (safetensors' own reader) and stream A's out to a
safetensors file. No maths: the floor any file-to-file merge of two models stands on."""
import json
import sys

from safetensors import safe_open


def main(a_path, b_path, out_path):
    with safe_open(a_path, "pt") as fa, safe_open(b_path, "pt") as fb:
        keys = list(fa.keys())
        header, offset, tensors = {}, 0, []
        for k in keys:  # header first, from the shapes (a dtype/shape read is free)
            s = fa.get_slice(k)
            n = 1
            for d in s.get_shape():
                n *= d
            size = n * {"F16": 2, "F32": 4, "I64": 8, "BF16": 2}[s.get_dtype()]
            header[k] = {"dtype": s.get_dtype(), "shape": s.get_shape(), "data_offsets": [offset, offset + size]}
            offset += size
        blob = json.dumps(header).encode()
        blob += b" " * (-len(blob) % 8)
        with open(out_path, "wb") as out:
            out.write(len(blob).to_bytes(8, "little") + blob)
            for k in keys:
                a = fa.get_tensor(k)
                fb.get_tensor(k)
                out.write(a.contiguous().reshape(-1).view(dtype=__import__("torch").uint8).numpy().tobytes())


if __name__ == "__main__":
    main(*sys.argv[1:4])
