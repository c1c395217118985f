#!/usr/bin/env bash
# Print the path of a Python >= 3.12 and exit 0; otherwise explain on stderr and exit 1.
# Order: $PYTHON, then python3.12 python3.13 python3.14 python3 python on PATH, then pyenv's
# installs (3.12 first: the tested version; then newer minors). Every candidate is checked by running it, since names (and pyenv
# shims) say little about the version actually run.
set -uo pipefail

ok() {
    # True when "$1" runs and is Python >= 3.12.
    [ "$("$1" -c 'import sys; print(sys.version_info >= (3,12))' 2>/dev/null)" = "True" ]
}

resolve() {
    # Absolute path of the interpreter "$1" really is (follows pyenv shims and symlinks).
    "$1" -c 'import sys; print(sys.executable)' 2>/dev/null
}

if [ -n "${PYTHON:-}" ]; then
    if ok "$PYTHON"; then
        resolve "$PYTHON"
        exit 0
    fi
    echo "find_python: PYTHON=$PYTHON is not a working Python >= 3.12; looking elsewhere" >&2
fi

for name in python3.12 python3.13 python3.14 python3 python; do
    if command -v "$name" >/dev/null 2>&1 && ok "$name"; then
        resolve "$name"
        exit 0
    fi
done

if command -v pyenv >/dev/null 2>&1; then
    pyenv_root="$(pyenv root 2>/dev/null)"
else
    pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
fi
if [ -n "${pyenv_root:-}" ] && [ -d "$pyenv_root/versions" ]; then
    # 3.12 first (the tested minor), newest patch first, then newer minors.
    for minor in 12 13 14 15 16 17 18 19; do
        while IFS= read -r py; do
            if [ -x "$py" ] && ok "$py"; then
                resolve "$py"
                exit 0
            fi
        done < <(ls -d "$pyenv_root"/versions/3."$minor".*/bin/python 2>/dev/null | sort -rV)
    done
fi

echo "sos_jax needs Python >= 3.12; none found on PATH or in pyenv; install one (e.g. \`pyenv install 3.12\`) or set PYTHON=/path/to/python3.12" >&2
exit 1
