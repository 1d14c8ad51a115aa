"""Integrity probes: is the kernel that ran a graded cell still the one the grader started?

A graded cell earns its points when it runs without an error, so a submission could earn them
by changing what "an error" means: replacing ``checks.check_layer`` or ``numpy.allclose``,
adding an IPython input transformer that turns ``assert`` into ``pass``, patching the kernel's
reply, or building its layer on the answer key (the installed ``cnn_lessons``).  Before and after
every graded cell the grader sends :data:`PROBE` to the kernel (silently, outside the cell
history) and compares what it reports with what the grader computed itself:

- **fingerprints** (:func:`fingerprint`: bytecode, constants, names, defaults) of every function
  and class method of the harness (``checks``), of ``cnn_lessons``, of numpy's comparison and
  testing functions, of IPython's shell and transformers and of the kernel's message handling,
  computed by the grader from the same installed files;
- **the builtins** the checks use (``AssertionError``, ``isinstance``, ``abs``, ...) are the
  interpreter's own, and no trace or profile function is installed;
- **the input transformers** are those the kernel had before any cell of the submission ran;
- **known-bad probes still fail**: ``assert False`` (also through IPython's transformers) raises,
  ``numpy.allclose(0, 1)`` is False, the numpy testing asserts raise, and a deliberately broken
  layer fails ``checks.check_layer`` and ``checks.gradcheck``;
- **the names a graded cell uses** that the reference binds by ``import`` are still the imported
  objects (``np`` is numpy, ``check_layer`` is ``checks.check_layer``);
- **no student class subclasses** a ``cnn_lessons`` class or keeps one as a class attribute
  (the grader also reads the student's cells for any mention of ``cnn_lessons``, and for names
  imported from it that the teacher's solution does not use).

The probe runs inside the student's kernel, so a determined student who studies it can still
fool it; together with the sandbox it stops every known way, and each flag names what it saw.
"""

from __future__ import annotations

import ast
import importlib
import sys

# The modules whose functions and classes are fingerprinted (when the kernel has loaded them).
PROTECTED_MODULES = (
    "checks", "checks.finite_differences", "checks.overfit", "checks.protocol", "checks.report",
    "numpy.testing._private.utils",
    "IPython.core.interactiveshell", "IPython.core.inputtransformer2",
    "ipykernel.ipkernel", "ipykernel.kernelbase", "ipykernel.zmqshell", "jupyter_client.session",
)
PROTECTED_PACKAGES = ("cnn_lessons",)     # every loaded submodule
# numpy functions that are wrappers (dispatchers) or ufuncs, looked up by attribute.
NUMPY_NAMES = ("allclose", "isclose", "array_equal", "array_equiv", "all", "any", "isfinite",
               "isnan", "abs", "absolute", "maximum", "minimum", "max", "min", "sum", "mean",
               "where", "asarray", "array", "linalg.norm")
BUILTIN_NAMES = ("AssertionError", "Exception", "BaseException", "isinstance", "issubclass",
                 "abs", "all", "any", "max", "min", "sum", "len", "float", "int", "bool", "round",
                 "print", "type", "getattr", "hasattr", "range", "zip", "enumerate", "sorted",
                 "repr", "str", "list", "tuple", "dict", "set", "exec", "compile", "eval",
                 "__import__", "object", "super")

# Shared by the grader and the kernel: the same function computes both sides of a comparison.
FINGERPRINT_SOURCE = r'''
def _checks_fp(obj, depth=0):
    import re as _re, types as _t
    def _r(value):                      # no memory address: it differs between processes
        return _re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))
    def code(c):
        consts = []
        for k in c.co_consts:
            if type(k) is _t.CodeType:
                consts.append(code(k))
            elif type(k) is frozenset:
                consts.append(("frozenset", tuple(sorted(repr(e) for e in k))))
            else:
                consts.append(_r(k))
        return (c.co_code, tuple(consts), c.co_names, c.co_varnames, c.co_freevars)
    kind = type(obj)
    if kind is _t.FunctionType:
        return ("function", obj.__module__, obj.__qualname__, code(obj.__code__),
                _r(obj.__defaults__), _r(sorted((obj.__kwdefaults__ or {}).items())))
    if kind is property:
        return ("property", _checks_fp(obj.fget, depth), _checks_fp(obj.fset, depth))
    if kind in (staticmethod, classmethod):
        return (kind.__name__, _checks_fp(obj.__func__, depth))
    if kind is _t.BuiltinFunctionType:
        owner = getattr(obj, "__self__", None)
        return ("builtin", obj.__name__, getattr(owner, "__name__", repr(type(owner))))
    if kind.__name__ == "ufunc":
        return ("ufunc", obj.__name__)
    if kind.__name__ == "_ArrayFunctionDispatcher":
        return ("dispatcher", _checks_fp(obj._implementation, depth))
    if kind is _t.ModuleType:
        return ("module", obj.__name__, getattr(obj, "__file__", None))
    if isinstance(obj, type):
        heap = bool(obj.__flags__ & (1 << 9))
        if depth > 0:
            return ("class", obj.__module__, obj.__qualname__, heap)
        members = []
        for name, value in sorted(vars(obj).items()):
            if type(value) in (_t.FunctionType, property, staticmethod, classmethod):
                members.append((name, _checks_fp(value, 1)))
        return ("class", obj.__module__, obj.__qualname__, heap,
                tuple(b.__module__ + "." + b.__qualname__ for b in obj.__mro__), tuple(members))
    return ("object", kind.__module__, kind.__qualname__)
'''

_namespace: dict = {}
exec(FINGERPRINT_SOURCE, _namespace)
fingerprint = _namespace["_checks_fp"]


def _module_members(module) -> dict[str, object]:
    """``{qualified name: object}`` of the functions and classes a module defines."""
    found = {}
    for name, value in sorted(vars(module).items()):
        if getattr(value, "__module__", None) != module.__name__:
            continue
        if isinstance(value, type) or type(value).__name__ == "function":
            found[f"{module.__name__}:{name}"] = value
    return found


def protected_objects() -> dict[str, object]:
    """Everything the probe fingerprints, as the grader's own interpreter has it."""
    import pkgutil

    import numpy

    objects = {}
    names = list(PROTECTED_MODULES)
    for package in PROTECTED_PACKAGES:
        module = importlib.import_module(package)
        names.append(package)
        names += [f"{package}.{info.name}" for info in pkgutil.iter_modules(module.__path__)
                  if info.name not in ("__main__", "plots")]
    for name in names:
        try:
            module = importlib.import_module(name)
        except Exception:
            continue
        objects.update(_module_members(module))
    for name in NUMPY_NAMES:
        value = numpy
        for part in name.split("."):
            value = getattr(value, part)
        objects[f"numpy:{name}"] = value
    import builtins
    for name in BUILTIN_NAMES:
        objects[f"builtins:{name}"] = getattr(builtins, name)
    return objects


_expected_cache: dict[str, str] | None = None


def expected_fingerprints() -> dict[str, str]:
    """``{"module:name": SHA-256 of repr(fingerprint)}`` computed in the grader (once)."""
    import hashlib

    global _expected_cache
    if _expected_cache is None:
        _expected_cache = {name: hashlib.sha256(repr(fingerprint(obj)).encode()).hexdigest()
                           for name, obj in protected_objects().items()}
    return _expected_cache


# The code sent to the kernel.  It defines nothing the submission can see afterwards except
# the result, which the grader reads through the kernel protocol's user_expressions.
PROBE = FINGERPRINT_SOURCE + r'''
def _checks_probe(names, student_names, imported, check_behaviour):
    import builtins as _b, sys as _s, types as _t
    from hashlib import sha256 as _sha
    report = {"fingerprints": {}, "problems": [], "baseline": None}
    problems = report["problems"]
    for qualified in names:
        module_name, _, attr = qualified.partition(":")
        if module_name == "builtins":
            module = _b
        elif module_name == "numpy":
            module = _s.modules.get("numpy")
        else:
            module = _s.modules.get(module_name)
        if module is None:
            continue
        value = module
        try:
            for part in attr.split("."):
                value = getattr(value, part)
        except AttributeError:
            report["fingerprints"][qualified] = "missing"
            continue
        try:
            report["fingerprints"][qualified] = _sha(repr(_checks_fp(value)).encode()).hexdigest()
        except Exception as err:
            report["fingerprints"][qualified] = "unreadable: " + type(err).__name__
    if type(_sha) is not _t.BuiltinFunctionType:
        problems.append("hashlib.sha256 is not the interpreter's own")
    if _s.gettrace() is not None or _s.getprofile() is not None:
        problems.append("a trace or profile function is installed (sys.settrace/setprofile)")
    ip = get_ipython()
    kernel = getattr(ip, "kernel", None)
    session = getattr(kernel, "session", None)
    overrides = []                      # methods set on the objects themselves, not the class
    for owner, attrs in ((ip, ("run_cell", "run_cell_async", "run_ast_nodes", "run_code",
                               "transform_cell", "showtraceback", "_showtraceback",
                               "should_run_async", "user_expressions")),
                         (kernel, ("do_execute", "execute_request", "send_response",
                                   "dispatch_shell", "_publish_execute_input",
                                   "finish_metadata")),
                         (session, ("send", "serialize", "sign", "msg"))):
        for attr in attrs:
            if owner is not None and attr in vars(owner):
                overrides.append((attr, repr(_checks_fp(vars(owner)[attr]))))
    manager = ip.input_transformer_manager
    groups = (ip.input_transformers_cleanup, manager.cleanup_transforms, manager.line_transforms,
              manager.token_transformers, ip.input_transformers_post, ip.ast_transformers)
    report["baseline"] = repr((tuple(tuple(repr(_checks_fp(t)) for t in g) for g in groups),
                               tuple(overrides)))
    user = ip.user_ns
    if user.get("__builtins__") not in (_b, vars(_b)):
        problems.append("__builtins__ of the notebook is not the builtins module")
    for name, module_name, attr in imported:
        if name not in user:
            continue
        module = _s.modules.get(module_name)
        if module is None or type(module).__name__ != "module":
            problems.append("%s: module %s is missing or not a module" % (name, module_name))
            continue
        target = module
        try:
            for part in (attr.split(".") if attr else []):
                target = getattr(target, part)
        except AttributeError:
            problems.append("%s: %s has no %s" % (name, module_name, attr))
            continue
        if user[name] is not target:
            problems.append("%s is no longer %s%s (rebound by the notebook)"
                            % (name, module_name, "." + attr if attr else ""))
    for name in student_names:
        value = user.get(name)
        if not isinstance(value, type):
            continue
        for base in value.__mro__[1:]:
            if str(getattr(base, "__module__", "")).split(".")[0] == "cnn_lessons":
                problems.append("%s subclasses %s.%s from cnn_lessons (the answer key)"
                                % (name, base.__module__, base.__qualname__))
                break
        for attr, member in vars(value).items():
            if str(getattr(member, "__module__", "")).split(".")[0] == "cnn_lessons":
                problems.append("%s.%s holds %r from cnn_lessons (the answer key)"
                                % (name, attr, member))
    if check_behaviour:
        try:
            exec(compile("assert False", "<probe>", "exec"), {})
            problems.append("'assert False' did not raise")
        except AssertionError:
            pass
        try:
            exec(compile(ip.transform_cell("assert False\n"), "<probe>", "exec"), {})
            problems.append("'assert False' did not raise after IPython's input transformers")
        except AssertionError:
            pass
        np = _s.modules.get("numpy")
        if np is not None:
            if np.allclose(0.0, 1.0) or np.isclose(0.0, 1.0) or np.array_equal([0], [1]):
                problems.append("numpy says 0 equals 1 (allclose, isclose or array_equal)")
            for fn in ("assert_allclose", "assert_array_equal", "assert_array_almost_equal",
                       "assert_almost_equal", "assert_equal"):
                try:
                    getattr(np.testing, fn)(0.0, 1.0)
                    problems.append("numpy.testing.%s(0, 1) did not raise" % fn)
                except AssertionError:
                    pass
        harness = _s.modules.get("checks")
        if harness is not None and np is not None:
            class _Broken:                   # backward forgets the factor 2
                def __init__(self):
                    self.params, self.grads = {}, {}
                def forward(self, x):
                    return 2 * x
                def backward(self, dout):
                    return dout
            x = np.arange(6.0).reshape(2, 3)
            for fn in ("gradcheck", "check_layer"):
                try:
                    if getattr(harness, fn)(_Broken(), x).ok:
                        problems.append("checks.%s passes a layer with a wrong backward" % fn)
                except Exception as err:
                    problems.append("checks.%s raised on a broken layer (%s)"
                                    % (fn, type(err).__name__))
    return repr(report)
'''


def probe_code(names, student_names, imported, check_behaviour: bool) -> str:
    """The code to execute silently in the kernel; the result is the user expression
    ``_checks_probe_result``."""
    call = (f"_checks_probe_result = _checks_probe({sorted(names)!r}, {sorted(student_names)!r}, "
            f"{sorted(imported)!r}, {bool(check_behaviour)!r})\n"
            f"del _checks_probe, _checks_fp\n")
    return PROBE + call


RESULT_NAME = "_checks_probe_result"


def compare(report: dict, baseline_transformers: str | None, expected=None) -> list[str]:
    """The problems in a probe ``report`` (from the kernel) against the grader's fingerprints."""
    problems = list(report.get("problems", []))
    expected = expected if expected is not None else expected_fingerprints()
    for name, seen in sorted(report.get("fingerprints", {}).items()):
        if name in expected and seen != expected[name]:
            module, _, attr = name.partition(":")
            what = "missing" if seen == "missing" else "not the installed original"
            problems.append(f"{module}.{attr} is {what}")
    if baseline_transformers is not None and report.get("baseline") != baseline_transformers:
        problems.append("IPython's input or AST transformers, or methods of the shell, the "
                        "kernel or its session, were changed")
    return problems


# --------------------------------------------------------------------------------------------
# Reading the student's code (in the grader, no kernel)

def defined_names(source: str, assignments: bool = True) -> set[str]:
    """Top-level names a cell defines (def, class and, unless ``assignments`` is False,
    assignment); empty if unparsable."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif assignments and isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def import_bindings(source: str) -> set[tuple[str, str, str]]:
    """``{(bound name, module, attribute or "")}`` of the import statements in ``source``."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    found.add((alias.asname, alias.name, ""))
                else:
                    top = alias.name.split(".")[0]
                    found.add((top, top, ""))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if alias.name != "*":
                    found.add((alias.asname or alias.name, node.module, alias.name))
    return found


def answer_key_names(bindings) -> set[str]:
    """The names among ``import_bindings`` entries that are bound to ``cnn_lessons`` or a part
    of it (the answer key)."""
    return {name for name, module, _ in bindings if module.split(".")[0] == "cnn_lessons"}


def used_names(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def mentions_answer_key(source: str) -> bool:
    """Does the code name the installed package (the answer key), in any spelling we can see?"""
    flat = source.replace(" ", "").replace('"', "").replace("'", "").replace("+", "")
    return "cnn_lessons" in flat or "cnn_lessons" in source


def parse_report(text: str) -> dict:
    """The probe's report from the ``text/plain`` of the user expression."""
    value = ast.literal_eval(text)
    if isinstance(value, str):
        value = ast.literal_eval(value)
    if not isinstance(value, dict):
        raise ValueError("not a probe report")
    return value


if __name__ == "__main__":               # the number of fingerprints, for a quick look
    print(len(expected_fingerprints()), file=sys.stderr)
