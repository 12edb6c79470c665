"""The two ways the feature kernels are compiled.

:data:`kernel` is for functions called from Python; :data:`helper` for
those only other compiled functions call. A helper needs no wrapper that
converts Python objects to native arguments (nor a C callback), and
generating and optimizing those wrappers was about 9 % of compiling every
kernel on an empty cache (16.3 -> 14.9 CPU s, medians of 5 alternated
fresh-cache compiles; ``benchmarks/results/first_run.md``).
Calling a helper from Python crashes the interpreter (there is no entry
point to call); tests reach helpers through a compiled function.

Neither has a C callback (``no_cfunc_wrapper``): nothing takes a kernel's
address as a C function (numba's first-class function types, ``cfunc``), and
building the callbacks was about 0.3 CPU s of an empty cache.
"""

from __future__ import annotations

import numba

__all__ = ["helper", "kernel"]

kernel = numba.njit(cache=True, nogil=True, no_cfunc_wrapper=True)
helper = numba.njit(cache=True, nogil=True, no_cpython_wrapper=True, no_cfunc_wrapper=True)
