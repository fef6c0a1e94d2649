#!/usr/bin/env python3
"""Normalised token comparison for LinkRewrite tests.

usage: tokens.py ORIGINAL REWRITTEN FROM=TO [FROM=TO ...]
Parses both documents with the stdlib HTML parser; applies the maps to the
URL attributes of the original (as LinkRewrite should) and prints a diff of
the token streams. Exit 0 when they match and at least one URL changed.
"""
import sys
from html.parser import HTMLParser

URL_ATTRS = {"href", "src", "action", "formaction", "cite", "background", "poster", "data",
             "codebase", "longdesc", "usemap", "manifest", "icon"}


class Tokens(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=False)
        self.tokens = []

    def handle_starttag(self, tag, attrs):
        self.tokens.append(("start", tag, tuple(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.tokens.append(("startend", tag, tuple(attrs)))

    def handle_endtag(self, tag):
        self.tokens.append(("end", tag))

    def handle_data(self, data):
        self.tokens.append(("data", data))

    def handle_comment(self, data):
        self.tokens.append(("comment", data))

    def handle_decl(self, decl):
        self.tokens.append(("decl", decl))

    def handle_entityref(self, name):
        self.tokens.append(("entity", name))

    def handle_charref(self, name):
        self.tokens.append(("charref", name))


def parse(path):
    p = Tokens()
    p.feed(open(path, encoding="latin-1").read())
    p.close()
    # Adjacent data tokens depend on chunking; merge them.
    merged = []
    for t in p.tokens:
        if t[0] == "data" and merged and merged[-1][0] == "data":
            merged[-1] = ("data", merged[-1][1] + t[1])
        else:
            merged.append(t)
    return merged


def apply_maps(tokens, maps):
    changed = 0
    out = []
    for t in tokens:
        if t[0] in ("start", "startend"):
            attrs = []
            for name, value in t[2]:
                if name in URL_ATTRS and value:
                    for src, dst in maps:
                        if value.startswith(src):
                            value = dst + value[len(src):]
                            changed += 1
                            break
                attrs.append((name, value))
            t = (t[0], t[1], tuple(attrs))
        out.append(t)
    return out, changed


def main():
    original, rewritten = parse(sys.argv[1]), parse(sys.argv[2])
    maps = sorted((m.split("=", 1) for m in sys.argv[3:]), key=lambda m: -len(m[0]))
    expected, changed = apply_maps(original, maps)
    if expected != rewritten:
        for i, (a, b) in enumerate(zip(expected, rewritten)):
            if a != b:
                print("token %d differs:\n expected %r\n got      %r" % (i, a, b))
                break
        else:
            print("token counts differ: %d vs %d" % (len(expected), len(rewritten)))
        sys.exit(1)
    print("%d tokens identical after mapping; %d URLs rewritten" % (len(expected), changed))
    sys.exit(0)


if __name__ == "__main__":
    main()
