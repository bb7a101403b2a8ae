"""Type-check and lower every qrt CUDA kernel for a real GPU target (sm_80) to LLVM IR, without a
GPU, a driver or NVVM. Run as a script in a process WITHOUT NUMBA_ENABLE_CUDASIM.

The simulator runs kernels as Python, so it accepts code that numba.cuda cannot compile (e.g. a
shared-array shape computed at run time). This catches that class of bug on GPU-less machines.
Exit 0: all lowered; 1: a kernel failed (printed); 3: cannot check here (printed "SKIP: why").
"""
import sys


def main() -> int:
    try:
        from numba import cuda, types
        from numba.cuda.compiler import compile_cuda
        import numba.cuda.dispatcher as dispatcher
        if getattr(cuda, "implementation", "") != "NVIDIA":
            print("SKIP: needs numba-cuda (the NVIDIA numba.cuda), found the built-in one")
            return 3
        if cuda.is_available.__module__.endswith("simulator_init"):
            print("SKIP: NUMBA_ENABLE_CUDASIM is set")
            return 3

        class _Sm80:  # device functions ask the current device for its compute capability
            compute_capability = (8, 0)

        dispatcher.get_current_device = lambda: _Sm80()
    except Exception as e:  # numba-cuda internals moved: do not fail the suite for that
        print(f"SKIP: numba-cuda internals unavailable ({type(e).__name__}: {e})")
        return 3

    from qrt.kernels.cuda import _kernels as K

    def arr(dt, nd):
        return types.Array(dt, nd, "C")

    u8, i8, f4, i4, i64 = types.uint8, types.int8, types.float32, types.int32, types.int64
    gemm = K.make_gemm_kernel(64, 64, 32, 4, 4)
    conv = K.make_conv_kernel(64, 64, 32, 4, 4)

    cases = [
        ("quantize f32->u8", K.quantize_kernel,
         (arr(f4, 1), arr(f4, 1), arr(i4, 1), i64, i64, i64, arr(u8, 1))),
        ("quantize f32->s8", K.quantize_kernel,
         (arr(f4, 1), arr(f4, 1), arr(i4, 1), i64, i64, i64, arr(i8, 1))),
        ("dequantize s8", K.dequantize_kernel, (arr(i8, 1), arr(f4, 1), arr(i4, 1), i64, arr(f4, 1))),
        ("minmax", K.minmax_partial_kernel, (arr(f4, 1), arr(f4, 1), arr(f4, 1))),
        ("dynamic params", K.dynamic_params_kernel,
         (arr(f4, 1), arr(f4, 1), f4, arr(f4, 1), arr(i4, 1))),
        ("channel bias", K.channel_bias_kernel, (arr(f4, 1), arr(f4, 1), i64, i64, f4, f4)),
        ("lut u8->s8", K.lut_kernel, (arr(u8, 1), arr(i8, 2), i64, i64, arr(i8, 1))),
        ("lut s8->f32", K.lut_kernel, (arr(i8, 1), arr(f4, 2), i64, i64, arr(f4, 1))),
        ("global avg u8->s8", K.global_avg_kernel,
         (arr(u8, 3), i64, types.float64, i64, i64, i64, arr(i8, 2))),
        ("maxpool u8", K.maxpool_kernel, (arr(u8, 4), types.UniTuple(i64, 10), i64, arr(u8, 4))),
        ("maxpool s8", K.maxpool_kernel, (arr(i8, 4), types.UniTuple(i64, 10), i64, arr(i8, 4))),
    ]
    tail = (arr(i4, 1), arr(f4, 1), i64, arr(i64, 1), i64, arr(f4, 1))
    for a, w, o in ((u8, i8, u8), (i8, u8, f4), (i8, i8, i8)):
        cases.append((f"gemm {a}x{w}->{o}", gemm,
                      (arr(a, 2), i64, arr(w, 2), arr(i4, 1)) + tail + (arr(o, 2),)))
    for x, o in ((u8, i8), (i8, f4), (u8, u8)):
        sig = (arr(x, 4), i64, arr(i8, 2), arr(i4, 1), types.UniTuple(i64, 10)) + tail + (arr(o, 4),)
        cases.append((f"conv {x}->{o}", conv, sig))
        cases.append((f"depthwise {x}->{o}", K.depthwise_kernel, sig))

    failed = 0
    for name, kern, sig in cases:
        try:
            compile_cuda(kern.py_func, types.void, sig, cc=(8, 0)).library.get_llvm_str()
            print("OK", name)
        except Exception as e:
            failed += 1
            print("FAIL", name, f"{type(e).__name__}: {e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
