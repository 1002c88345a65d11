"""What the docs show: fenced code blocks of a Markdown file and the `kvae ...` command lines in its bash blocks
(tests/test_docs.py parses and runs them; other tests pick the commands they run as written)."""
import re
import shlex


def blocks(path, language):
    text = open(path).read()
    return [m.group(1) for m in re.finditer(rf"^```{language}\n(.*?)^```", text, re.M | re.S)]


def command_lines(path):
    """`kvae ...` commands in bash blocks: continuation lines joined, comments and env prefixes dropped,
    `a && b` split; lines with the placeholder `...` are skipped."""
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
                if words[:1] == ["kvae"] and "..." not in words:
                    commands.append(words[1:])
    return commands
