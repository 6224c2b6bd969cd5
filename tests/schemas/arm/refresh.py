"""Copy into this directory the ARM template schemas that checking deploy/'s templates takes, and nothing else.

    python tests/schemas/arm/refresh.py SOURCE [--commit SHA] [--dest DIR]

SOURCE is the schemas/ directory of a clone of https://github.com/Azure/azure-resource-manager-schemas (or a copy
laid out the same way, with the repository's LICENSE in it or beside it). Copied: the deploymentTemplate.json that
each template's $schema names, the schema of every (type, apiVersion) the templates deploy and of those that
tests/harness/arm_schema.py's PLANNED lists, and every file these refer to, $ref after $ref. Files of an earlier
copy that are no longer needed are removed. --commit records the source's commit in README.md. --dest writes
somewhere else than this directory (the tests do).

The files are copied as they are, except that Unicode quotation marks become JSON escapes (\\u2019 for a
right single quote: the same JSON), because ansible-test sanity refuses them in any file of the collection.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..", "..")))

from harness import arm_schema  # noqa: E402  pylint: disable=wrong-import-position

QUOTES = {"\u2018": "\\u2018", "\u2019": "\\u2019", "\u201c": "\\u201c", "\u201d": "\\u201d"}


def templates():
    loaded = []
    for path in arm_schema.shipped_templates():
        with open(os.path.join(arm_schema.ROOT, path)) as handle:
            loaded.append(json.load(handle))
    return loaded


def copied(dest):
    """The schema files in a copy."""
    return set(os.path.relpath(path, dest) for path in glob.glob(os.path.join(dest, "*", "*.json")))


def copy_file(source, dest, relative):
    with open(os.path.join(source, relative), encoding="utf-8") as handle:
        text = handle.read()
    escaped = text
    for quote, escape in QUOTES.items():
        escaped = escaped.replace(quote, escape)
    if json.loads(escaped) != json.loads(text):
        raise SystemExit("%s: escaping its quotation marks changed it" % relative)
    os.makedirs(os.path.dirname(os.path.join(dest, relative)), exist_ok=True)
    with open(os.path.join(dest, relative), "w", encoding="utf-8") as handle:
        handle.write(escaped)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="the schemas/ directory of a clone of Azure/azure-resource-manager-schemas")
    parser.add_argument("--commit", help="the clone's commit, recorded in README.md")
    parser.add_argument("--dest", default=HERE, help="where the copy is (default: this directory)")
    args = parser.parse_args(argv)
    source, dest = os.path.abspath(args.source), os.path.abspath(args.dest)
    try:
        needed = arm_schema.needed_files(arm_schema.Schemas(source), templates())
    except arm_schema.SchemaMissing as missing:
        raise SystemExit("not in %s: %s" % (source, missing))
    for relative in sorted(copied(dest) - needed):
        os.remove(os.path.join(dest, relative))
        if not os.listdir(os.path.dirname(os.path.join(dest, relative))):
            os.rmdir(os.path.dirname(os.path.join(dest, relative)))
    for relative in sorted(needed):
        copy_file(source, dest, relative)
    for license_path in (os.path.join(source, "LICENSE"), os.path.join(source, "..", "LICENSE")):
        if os.path.isfile(license_path):
            shutil.copyfile(license_path, os.path.join(dest, "LICENSE"))
            break
    else:
        raise SystemExit("no LICENSE in or beside %s" % source)
    if args.commit:
        readme = os.path.join(dest, "README.md")
        with open(readme) as handle:
            text = handle.read()
        with open(readme, "w") as handle:
            handle.write(re.sub(r"commit [0-9a-f]{40}", "commit " + args.commit, text))
    total = sum(os.path.getsize(os.path.join(dest, r)) for r in needed)
    print("%d files, %d kB:" % (len(needed), total // 1024))
    for relative in sorted(needed):
        print("  " + relative)


if __name__ == "__main__":
    main()
