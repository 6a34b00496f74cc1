#!/usr/bin/env python3
"""Structure check for rendered pages: a doctype, <html lang="...">, one <title>, one
<main>, every non-void element closed in order, and no placeholder left over.
Usage: check_html.py FILE...   Exit status 1 and one line per problem on failure."""
import sys
from html.parser import HTMLParser

VOID = {'area', 'base', 'br', 'col', 'embed', 'hr', 'img', 'input', 'link', 'meta', 'source', 'track', 'wbr'}


class Checker(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack = []
        self.problems = []
        self.counts = {}
        self.doctype = False
        self.lang = None

    def where(self):
        line, col = self.getpos()
        return '%d:%d' % (line, col + 1)

    def handle_decl(self, decl):
        self.doctype = self.doctype or decl.lower() == 'doctype html'

    def handle_starttag(self, tag, attrs):
        self.counts[tag] = self.counts.get(tag, 0) + 1
        if tag == 'html':
            self.lang = dict(attrs).get('lang')
        if tag not in VOID:
            self.stack.append((tag, self.where()))

    def handle_startendtag(self, tag, attrs):
        self.counts[tag] = self.counts.get(tag, 0) + 1

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1][0] != tag:
            open_tag = self.stack[-1] if self.stack else ('nothing', '')
            self.problems.append('%s: </%s> closes <%s> opened at %s' % (self.where(), tag, open_tag[0], open_tag[1]))
            return
        self.stack.pop()


def check(path):
    with open(path, encoding='utf-8') as f:
        text = f.read()
    c = Checker()
    c.feed(text)
    c.close()
    problems = list(c.problems)
    problems += ['<%s> opened at %s is never closed' % (tag, at) for tag, at in c.stack]
    if not c.doctype:
        problems.append('no <!DOCTYPE html>')
    if not c.lang:
        problems.append('<html> has no lang attribute')
    for tag in ('html', 'head', 'body', 'title', 'main'):
        if c.counts.get(tag, 0) != 1:
            problems.append('%d <%s> elements, expected 1' % (c.counts.get(tag, 0), tag))
    if '{{' in text:
        problems.append('a placeholder was left unrendered')
    return ['%s: %s' % (path, p) for p in problems]


def main():
    problems = [p for path in sys.argv[1:] for p in check(path)]
    for p in problems:
        print(p, file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == '__main__':
    main()
