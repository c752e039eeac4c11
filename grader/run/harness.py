# Runs inside the student's kernel, after the student's cells. It calls the student's functions
# and publishes each outcome as plain JSON on a display channel keyed by a per-run nonce.
# Nothing here decides a grade: the grader parses and checks every payload in its own process.
# It is sent as source text (never imported by the grader), so it stays self-contained.


def __grader_install__(nonce, mime, max_items, max_text, max_entries, max_key,
                       max_arguments, max_stand_in_calls):
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
            if len(keys) > max_entries or any(type(k) is not str or len(k) > max_key for k in keys):
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

    def _safe(value):
        # A student's object can fool isinstance (a __class__ property) and make the encoders
        # raise: that is a value the grader cannot read, not the end of the run.
        try:
            return _encode_value(value)
        except Exception:
            return {"kind": "unsupported", "type": "unreadable"}

    def _recorder():
        # What the stand-ins of one case are given, encoded at once, up to a bound: the grader
        # decides from these values whether the function called its dependency as it should.
        calls = []
        state = {"open": True, "overflow": False, "size": 0}

        def record(dependency, given):
            if not state["open"] or state["overflow"]:
                return
            if len(calls) >= max_stand_in_calls or len(given) > max_arguments:
                state["overflow"] = True
                return
            encoded = [_safe(g) for g in given]
            state["size"] += sum(_size(e) for e in encoded)
            if state["size"] > max_items:
                state["overflow"] = True
                return
            calls.append({"function": dependency, "arguments": encoded})

        return calls, state, record

    def _stand_in(dependency, answer, record):
        # Answers with a value the grader computed, whatever it is given: it holds no code of
        # the answer key, and the grader checks afterwards what it was given.
        def stand_in(*args, **kwargs):
            record(dependency, args + tuple(kwargs.values()))
            return _decode(answer)

        return stand_in

    _absent = object()

    def run(name, cases, stand_ins=None):
        """Call `name` on each case. `stand_ins` maps another function's name to one answer per
        case: during each call that name is bound to a stand-in giving that answer."""
        func = namespace.get(name)
        if not callable(func):
            found = None if name not in namespace else _text(type(namespace[name]).__name__)
            _emit({"function": name, "case": -1, "outcome": {"kind": "missing", "found": found}})
            return
        for index, raw in enumerate(cases):
            args = [_decode(a) for a in raw]
            calls, state, record = _recorder()
            replaced = {}
            for dependency, answers in (stand_ins or {}).items():
                replaced[dependency] = namespace.get(dependency, _absent)
                namespace[dependency] = _stand_in(dependency, answers[index], record)
            outcome = None
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
            finally:
                state["open"] = False
                for dependency, original in replaced.items():
                    if original is _absent:
                        namespace.pop(dependency, None)
                    else:
                        namespace[dependency] = original
            if outcome is None:
                outcome = _safe(result)
            # Arrays and dicts go back as the call left them; the grader compares them with
            # what it sent.
            after = [_safe(a) if isinstance(r, (list, dict)) else None
                     for a, r in zip(args, raw, strict=True)]
            _emit({"function": name, "case": index, "outcome": outcome, "after": after,
                   "stand_in_calls": calls, "stand_in_overflow": state["overflow"]})

    return run
