"""Requantizes a GGUF with llama.cpp's own quantizer (llama-cpp-python), e.g. SmolLM2 Q4_1
to Q4_K_M, so the Q4_K kernels can be checked and measured on a real model file.
Usage: python benches/reference/quantize_gguf.py IN.gguf OUT.gguf [q4_k_m]
Prints OUT's path. The output is written next to its final name and renamed, so an
interrupted run leaves no partial file."""
import os
import sys

import llama_cpp

FTYPES = {"q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M, "q4_k_s": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_S}


def main():
    src, dst = sys.argv[1], sys.argv[2]
    kind = sys.argv[3] if len(sys.argv) > 3 else "q4_k_m"
    if not os.path.exists(dst):
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = FTYPES[kind]
        params.allow_requantize = True  # the input is already quantized
        params.nthread = 2
        tmp = f"{dst}.part"
        rc = llama_cpp.llama_model_quantize(src.encode(), tmp.encode(), params)
        if rc != 0:
            sys.exit(f"llama_model_quantize failed ({rc})")
        os.replace(tmp, dst)
    print(dst)


if __name__ == "__main__":
    main()
