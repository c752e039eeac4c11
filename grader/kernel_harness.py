# Runs inside the student's kernel, after the student's cells. It calls the student's functions
# and publishes each outcome as plain JSON on a display channel keyed by a per-run nonce.
# Nothing here decides a grade: the grader parses and checks every payload in its own process.
# It is sent as source text (never imported by the grader), so it stays self-contained.


def __grader_install__(nonce, mime, max_items, max_text):
    import math as _math

    import numpy as _np
    from IPython.display import publish_display_data as _publish

    namespace = globals()

    def _number(x):
        x = float.__float__(x) if isinstance(x, float) else x
        if _math.isfinite(x):
            return x
        return "nan" if x != x else ("inf" if x > 0 else "-inf")

    def _text(obj):
        try:
            return str.__str__(str(obj))[:max_text]
        except BaseException:
            return "<unprintable>"

    def _encode(value):
        kind = type(value)
        if value is None:
            return {"kind": "none"}
        if kind in (float, int, bool) or isinstance(value, (float, int, _np.generic)):
            try:
                arr = _np.array(value, dtype=_np.float64)
            except BaseException:
                return {"kind": "unsupported", "type": _text(kind.__name__)}
            dtype = value.dtype.name if isinstance(value, _np.generic) else kind.__name__
            return {"kind": "number", "type": _text(kind.__name__), "dtype": dtype,
                    "value": _number(float(arr))}
        if isinstance(value, (_np.ndarray, list, tuple)):
            try:
                arr = _np.array(value, dtype=_np.float64, subok=False)
            except BaseException:
                return {"kind": "unsupported", "type": _text(kind.__name__)}
            if arr.size > max_items:
                return {"kind": "too_large", "type": _text(kind.__name__), "size": int(arr.size)}
            dtype = value.dtype.name if isinstance(value, _np.ndarray) else kind.__name__
            return {"kind": "array", "type": _text(kind.__name__), "dtype": _text(dtype),
                    "shape": [int(n) for n in arr.shape],
                    "data": [_number(v) for v in _np.ndarray.tolist(arr.ravel())]}
        return {"kind": "unsupported", "type": _text(kind.__name__)}

    def _emit(payload):
        _publish({mime: {"nonce": nonce, **payload}}, metadata={})

    def _copy(arg):
        return arg.copy() if isinstance(arg, _np.ndarray) else arg

    def run(name, cases):
        func = namespace.get(name)
        if not callable(func):
            _emit({"function": name, "case": -1, "outcome": {"kind": "missing"}})
            return
        for index, args in enumerate(cases):
            args = [_np.array(a, dtype=_np.float64) if isinstance(a, list) else a for a in args]
            before = [_copy(a) for a in args]
            try:
                result = func(*args)
            except KeyboardInterrupt:
                _emit({"function": name, "case": index, "outcome": {"kind": "timeout"}})
                return
            except NotImplementedError as exc:
                outcome = {"kind": "not_implemented", "message": _text(exc)}
            except BaseException as exc:
                outcome = {"kind": "raised", "type": _text(type(exc).__name__),
                           "message": _text(exc)}
            else:
                outcome = _encode(result)
            mutated = [
                i for i, (a, b) in enumerate(zip(args, before, strict=True))
                if isinstance(b, _np.ndarray) and not _np.array_equal(a, b)
            ]
            _emit({"function": name, "case": index, "outcome": outcome, "mutated": mutated})

    return run
