# Runs inside the student's kernel, after the student's cells. It calls the student's functions
# and publishes each outcome as plain JSON on a display channel keyed by a per-run nonce.
# Nothing here decides a grade: the grader parses and checks every payload in its own process.
# It is sent as source text (never imported by the grader), so it stays self-contained.


def __grader_install__(nonce, mime, max_items, max_text, max_entries):
    import contextlib as _contextlib
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

    def _encode_value(value, depth=0):
        # A dict of numbers/arrays, or a tuple/list holding dicts or arrays of different shapes;
        # anything else is a single number or array. A dict subclass (OrderedDict) is read
        # through dict's own methods, so no override of the student's decides what it holds.
        kind = type(value)
        if isinstance(value, dict) and depth < 2:
            keys = list(dict.keys(value))
            if len(keys) > max_entries or any(type(k) is not str or len(k) > 100 for k in keys):
                return {"kind": "unsupported", "type": "dict"}
            entries = {}
            for key, item in dict.items(value):
                encoded = _encode(item)
                if encoded["kind"] not in ("number", "array"):
                    return {"kind": "unsupported",
                            "type": "dict of " + encoded.get("type", encoded["kind"])}
                entries[key] = encoded
            return _capped({"kind": "dict", "type": "dict", "entries": entries})
        if kind in (tuple, list) and depth == 0 and any(isinstance(v, dict) for v in value):
            if len(value) > max_entries:
                return {"kind": "unsupported", "type": kind.__name__}
            items = [_encode_value(item, depth + 1) for item in value]
            bad = next((i for i in items if i["kind"] not in ("number", "array", "dict")), None)
            if bad is not None:
                return {"kind": "unsupported",
                        "type": kind.__name__ + " of " + bad.get("type", bad["kind"])}
            return _capped({"kind": "sequence", "type": kind.__name__, "items": items})
        encoded = _encode(value)
        if encoded["kind"] == "unsupported" and kind in (tuple, list) and depth == 0:
            if len(value) > max_entries:
                return encoded
            items = [_encode_value(item, depth + 1) for item in value]
            if all(i["kind"] in ("number", "array", "dict") for i in items):
                return _capped({"kind": "sequence", "type": kind.__name__, "items": items})
        return encoded

    def _size(encoded):
        if encoded["kind"] == "array":
            return len(encoded["data"])
        if encoded["kind"] == "dict":
            return sum(_size(v) for v in encoded["entries"].values())
        if encoded["kind"] == "sequence":
            return sum(_size(v) for v in encoded["items"])
        return 1

    def _capped(encoded):
        # max_items bounds a whole result, not each of its parts.
        size = _size(encoded)
        if size > max_items:
            return {"kind": "too_large", "type": encoded["type"], "size": size}
        return encoded

    def _decode(arg):
        # Arguments arrive as literals: lists become arrays, dicts hold arrays, and a tagged
        # ("code", source, constants) tuple becomes a function defined by the spec.
        if isinstance(arg, list):
            return _np.array(arg, dtype=_np.float64)
        if isinstance(arg, dict):
            return {k: _decode(v) for k, v in arg.items()}
        if isinstance(arg, tuple) and arg[0] == "code":
            scope = {"np": _np, "math": _math}
            scope.update((k, _decode(v)) for k, v in arg[2].items())
            return eval(arg[1], scope)
        return arg

    import sys as _sys

    _stream = _sys.stdout

    def _emit(payload):
        _publish({mime: {"nonce": nonce, **payload}}, metadata={})
        # Wait until the kernel's I/O thread has sent it: a later case that kills the kernel
        # must not take this outcome down with it.
        with _contextlib.suppress(BaseException):
            _stream.flush()

    def _unchanged(after, before):
        # `before` is a private copy the student's code never saw.
        if isinstance(before, _np.ndarray):
            return (isinstance(after, _np.ndarray) and after.shape == before.shape
                    and bool(_np.array_equal(after, before)))
        if isinstance(before, dict):
            return (isinstance(after, dict) and list(dict.keys(after)) == list(before)
                    and all(_unchanged(dict.__getitem__(after, k), v) for k, v in before.items()))
        return True

    def run(name, cases):
        func = namespace.get(name)
        if not callable(func):
            found = None if name not in namespace else _text(type(namespace[name]).__name__)
            _emit({"function": name, "case": -1, "outcome": {"kind": "missing", "found": found}})
            return
        for index, raw in enumerate(cases):
            args = [_decode(a) for a in raw]
            before = [_decode(a) for a in raw]
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
                outcome = _encode_value(result)
            mutated = [i for i, (a, b) in enumerate(zip(args, before, strict=True))
                       if not _unchanged(a, b)]
            _emit({"function": name, "case": index, "outcome": outcome, "mutated": mutated})

    return run
