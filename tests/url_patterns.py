"""Every URL pattern of the project, read from the resolver (not a list someone must keep).

Used by the access matrix and the fuzz test, so that a URL added later is covered by both without
anyone remembering to add it.
"""

from dataclasses import dataclass

from django.urls import URLPattern, URLResolver, get_resolver


@dataclass(frozen=True)
class Pattern:
    route: str  # the full route, e.g. "api/v1/checks/<int:check_id>" (or a regex for admin URLs)
    name: str | None
    callback: object
    converters: dict  # parameter name -> converter (of every level of the route)
    regex: bool  # True when some level is a regex pattern (re_path), as the admin's are

    @property
    def parameters(self):
        return tuple(self.converters)


def all_patterns(resolver=None, prefix="", converters=None, regex=False):
    """Every leaf URL pattern, with its full route and the converters of its parameters."""
    resolver = resolver or get_resolver()
    converters = converters or {}
    for entry in resolver.url_patterns:
        route = str(entry.pattern)
        level_converters = {**converters, **getattr(entry.pattern, "converters", {})}
        level_regex = regex or entry.pattern.__class__.__name__ == "RegexPattern"
        if level_regex:
            for name in entry.pattern.regex.groupindex:
                level_converters.setdefault(name, None)
        if isinstance(entry, URLResolver):
            yield from all_patterns(entry, prefix + route, level_converters, level_regex)
        elif isinstance(entry, URLPattern):
            yield Pattern(prefix + route, entry.name, entry.callback, level_converters, level_regex)
