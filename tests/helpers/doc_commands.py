"""What the docs show: fenced code blocks of a Markdown file, the `kvae ...` and `python apps/...` command lines
in its bash blocks (tests/test_docs.py parses and runs them; other tests pick the commands they run as written)."""
import re
import shlex


def blocks(path, language):
    text = open(path).read()
    return [m.group(1) for m in re.finditer(rf"^```{language}\n(.*?)^```", text, re.M | re.S)]


def command_lines(path):
    """`kvae ...` commands in bash blocks: continuation lines joined, comments and env prefixes dropped,
    `a && b` split; lines with the placeholder `...` are skipped."""
    return [words[1:] for words in _lines(path) if words[:1] == ["kvae"] and "..." not in words]


def script_lines(path):
    """`python apps/NAME.py ...` commands in bash blocks, as (path of the script, its arguments)."""
    return [(words[1], words[2:]) for words in _lines(path)
            if words[:1] == ["python"] and len(words) > 1 and words[1].startswith("apps/")]


def _lines(path):
    commands = []
    for block in blocks(path, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("#"):
                continue
            for part in line.split("&&"):
                words = shlex.split(part)
                while words and re.match(r"^[A-Z_]+=", words[0]):
                    words = words[1:]
                if words:
                    commands.append(words)
    return commands
