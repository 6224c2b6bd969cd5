"""Where a secret ended up: every form it takes on disk, looked for in a directory tree with GNU grep.

A secret travels as itself, as base64 of itself, and inside base64 of a larger document (an ARM template's script
line, a cloud-config's write_files with encoding: b64): there its base64 depends on where it starts in the document.
`forms()` gives, for each of the three alignments, the run of base64 characters that only the secret's own bytes
decide, so a secret is found in any base64 text that contains it, whatever surrounds it.
"""

import base64
import os
import subprocess
import tempfile

MIN_FORM = 8  # shorter base64 runs would match by chance


def _b64(data):
    return base64.b64encode(data).decode("ascii")


def base64_forms(value):
    """The base64 runs that `value` (str) decides alone, at each of the three alignments in a larger document."""
    data = value.encode("utf-8")
    found = {_b64(data)}  # the value alone, padding included
    for offset in (0, 1, 2):
        encoded = _b64(b"\0" * offset + data)
        head = 4 if offset else 0  # the first group mixes in what comes before the value ...
        tail = 4 if (offset + len(data)) % 3 else 0  # ... the last one what comes after it
        found.add(encoded[head:len(encoded) - tail])
    return set(form for form in found if len(form) >= MIN_FORM)


def needles(named, documents=()):
    """{text to look for: what it is} for each named secret ({name: value}) and each document (text) that carried
    them whole (its base64 too)."""
    out = {}
    for name, value in named.items():
        out[value] = name
        for form in base64_forms(value):
            out.setdefault(form, "base64 of %s" % name)
    for index, document in enumerate(documents):
        out.setdefault(_b64(document.encode("utf-8")), "base64 of document %d" % index)
    return out


def grep_argv(paths, patterns_file="-"):
    """grep listing the files under `paths` that hold a line of `patterns_file` (fixed strings; "-": stdin), binary
    files included, without following symlinks or reading devices, sockets and FIFOs."""
    return ["grep", "-rlsFa", "-D", "skip", "-f", patterns_file, "--"] + list(paths)


def files_holding(root, found_by, exclude=()):
    """{path: sorted labels} of the files under `root` (top-level entries in `exclude` skipped) that hold a needle.
    Top-level symlinks are skipped too (grep follows those it is given): a merged /usr's /bin is /usr/bin."""
    paths = [os.path.join(root, entry) for entry in sorted(os.listdir(root))
             if entry not in exclude and not os.path.islink(os.path.join(root, entry))]
    with tempfile.NamedTemporaryFile("w", suffix=".needles") as patterns:
        patterns.write("".join(needle + "\n" for needle in found_by))
        patterns.flush()
        proc = subprocess.run(grep_argv(paths, patterns.name), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              check=False, timeout=1800)
    if proc.returncode not in (0, 1):
        raise RuntimeError("grep failed (%d): %s" % (proc.returncode, proc.stderr.decode(errors="replace")[-2000:]))
    holding = {}
    for path in proc.stdout.decode("utf-8", "surrogateescape").splitlines():
        with open(path, "rb") as handle:
            data = handle.read()
        holding[path] = sorted(set(label for needle, label in found_by.items() if needle.encode("utf-8") in data))
    return holding
