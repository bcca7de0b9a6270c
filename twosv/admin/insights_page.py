"""The admin's insights page: locks, verdicts, receipts and next-step outcomes, as SVG charts.

Charts are rendered on the server (pygal): no script, no CDN.
"""

from __future__ import annotations

import math
from typing import Any

import pygal
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext_lazy as _
from pygal.style import Style

from twosv import insights


def insights_page(model_admin: admin.ModelAdmin, request: HttpRequest) -> HttpResponse:
    """Show locks, lookup verdicts, receipts and next-step outcomes over 7, 30 or 90 days."""
    if not all(
        request.user.has_perm(f"twosv.view_{name}")
        for name in ("event", "deliverylookup", "troubleshootingsession")
    ):
        raise PermissionDenied
    # Receipts are the delivery receipts' admin data: shown to those who may view them there.
    can_see_receipts = request.user.has_perm("twosv.view_deliveryreceipt")
    days = insights.parse_period(request.GET.get("days"))
    figures = insights.insights_for(days=days, receipts=can_see_receipts)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": _("2SV insights"),
        "app_name": model_admin.opts.app_config.verbose_name,
        "insights": figures,
        "periods": insights.PERIODS,
        "verdict_columns": insights.VERDICT_COLUMNS,
        "locks_chart": _locks_chart(figures),
        "verdicts_chart": _verdicts_chart(figures),
        "steps_chart": _steps_chart(figures),
        "receipts_chart": _receipts_chart(figures) if can_see_receipts else "",
        "can_see_receipts": can_see_receipts,
    }
    return TemplateResponse(request, "admin/twosv/insights.html", context)


# ---------------------------------------------------------------------------------------------
# Charts: server-side SVG, no script, no CDN
# ---------------------------------------------------------------------------------------------

_FONT = '"Segoe UI", system-ui, Roboto, "Helvetica Neue", Arial, sans-serif, "Apple Color Emoji"'
VERDICT_COLOURS = {
    "not_sent": "#9e9e9e",
    "delivered": "#2e7d32",
    "recipient_blocked": "#ef6c00",
    "carrier_filtered": "#f9a825",
    "unreachable": "#6a1b9a",
    "regional_provider_issue": "#c62828",
    "provider_error": "#ad1457",
    insights.LOOKUP_FAILED: "#37474f",
}


def _style(colours: tuple[str, ...]) -> Style:
    return Style(
        background="transparent",
        plot_background="#ffffff",
        foreground="#333333",
        foreground_strong="#333333",
        foreground_subtle="#dddddd",
        font_family=_FONT,
        label_font_size=12,
        major_label_font_size=12,
        legend_font_size=13,
        title_font_size=15,
        colors=colours,
    )


def _drop_scripts(root: Any) -> Any:
    """Remove pygal's inline config script: the charts are static and the page runs no JS."""
    for parent in list(root.iter()):
        for child in list(parent):
            if isinstance(child.tag, str) and child.tag.rsplit("}", 1)[-1] == "script":
                parent.remove(child)
    return root


def _render(chart: Any) -> SafeString:
    # pygal builds the SVG with ElementTree, which escapes every label and title we pass in.
    chart.add_xml_filter(_drop_scripts)
    svg: str = chart.render(is_unicode=True)
    return mark_safe(svg)  # noqa: S308


def _chart_config(**overrides: Any) -> dict[str, Any]:
    return {
        "js": [],
        "disable_xml_declaration": True,
        "explicit_size": False,
        "legend_at_bottom": True,
        "legend_at_bottom_columns": 4,
        "no_data_text": str(_("Nothing in this period")),
        "print_zeroes": False,
        "truncate_label": -1,
        "truncate_legend": -1,
        "show_y_guides": True,
        "height": 360,
        "width": 1000,
        **overrides,
    }


def _count_ticks(highest: int) -> list[int]:
    """Return whole-number ticks from 0 past `highest`: counts have no halves."""
    step = max(1, math.ceil(highest / 5))
    return list(range(0, max(highest, 1) + step, step))


def _locks_chart(figures: insights.Insights) -> SafeString:
    days = figures.locks
    step = max(1, len(days) // 10)
    chart = pygal.Bar(
        style=_style(("#c62828", "#2e7d32")),
        x_label_rotation=0,
        show_minor_x_labels=False,
        x_labels_major=[f"{day.day:%b %d}" for day in days[::step]],
        **_chart_config(),
    )
    chart.x_labels = [f"{day.day:%b %d}" for day in days]
    if figures.locks_total or figures.lifts_total:
        # Set only with data: pygal can't place y labels on an empty chart.
        chart.y_labels = _count_ticks(max(max(day.locked, day.lifted) for day in days))
        chart.add(str(_("Methods locked")), [day.locked for day in days])
        chart.add(str(_("Locks lifted by admins")), [day.lifted for day in days])
    return _render(chart)


def _verdicts_chart(figures: insights.Insights) -> SafeString:
    groups = figures.regions[:10]
    verdicts = [value for value, _label in insights.VERDICT_COLUMNS]
    chart = pygal.HorizontalStackedBar(
        style=_style((*(VERDICT_COLOURS[value] for value in verdicts), *INCIDENT_COLOURS)),
        **_chart_config(height=max(240, 130 + 36 * len(groups)), legend_at_bottom_columns=3),
    )
    # pygal draws the first label at the bottom; list the largest group first, at the top.
    chart.x_labels = [group.label for group in reversed(groups)]
    if groups:
        rows: list[list[int | None]] = []
        for value, label in insights.VERDICT_COLUMNS:
            rows.append([group.count(value) or None for group in reversed(groups)])
            chart.add(label, rows[-1])
        # Incidents over time: one series per incident, on its region's row, named by its
        # region and times; its bar is the incident's failed messages (not lookups).
        for mark in figures.incidents[-INCIDENT_SERIES:]:
            rows.append(
                [
                    mark.failures if group.key == mark.group_key else None
                    for group in reversed(groups)
                ]
            )
            chart.add(_incident_label(mark), rows[-1], stroke_style={"dasharray": "4,2"})
        chart.y_labels = _count_ticks(_stacked_highest(rows))
    return _render(chart)


def _stacked_highest(series: list[list[int | None]]) -> int:
    """Return the longest stacked bar: the largest sum of the series' values at one label."""
    return max((sum(value or 0 for value in bar) for bar in zip(*series, strict=True)), default=0)


# The incidents drawn on the verdicts chart at most (the newest); the table lists them all.
INCIDENT_SERIES = 8
INCIDENT_COLOURS = (
    "#4a0000",
    "#7f0000",
    "#b71c1c",
    "#d50000",
    "#ff1744",
    "#ff5252",
    "#880e4f",
    "#4a148c",
)


def _incident_label(mark: insights.IncidentMark) -> str:
    ended = (
        f"{timezone.localtime(mark.ended_at):%b %d %H:%M}"
        if mark.ended_at
        else str(_("still open"))
    )
    return str(_("Incident {region} {opened} → {ended}: {failures} failed messages")).format(
        region=mark.region,
        opened=f"{timezone.localtime(mark.opened_at):%b %d %H:%M}",
        ended=ended,
        failures=mark.failures,
    )


def _steps_chart(figures: insights.Insights) -> SafeString:
    steps = figures.steps[:12]
    chart = pygal.HorizontalStackedBar(
        style=_style(("#2e7d32", "#ef6c00", "#c62828")),
        **_chart_config(height=max(220, 90 + 36 * len(steps)), legend_at_bottom_columns=3),
    )
    # The step's title as agents saw it in the panel, not its code.
    chart.x_labels = [step.title for step in reversed(steps)]
    if steps:
        chart.add(str(_("Resolved")), [step.resolved or None for step in reversed(steps)])
        chart.add(str(_("Not resolved")), [step.not_resolved or None for step in reversed(steps)])
        chart.add(str(_("Escalated")), [step.escalated or None for step in reversed(steps)])
        # Counts have no tenths: whole-number ticks on the value axis.
        chart.y_labels = _count_ticks(max(step.total for step in steps))
    return _render(chart)


# The receipt series drawn at most (the largest); the rest are drawn together as "other".
RECEIPT_SERIES = 9
RECEIPT_COLOURS = (
    "#2e7d32",
    "#c62828",
    "#6a1b9a",
    "#ef6c00",
    "#f9a825",
    "#ad1457",
    "#1565c0",
    "#00838f",
    "#5d4037",
    "#9e9e9e",
)


def _receipts_chart(figures: insights.Insights) -> SafeString:
    """Receipts per region (largest ten), stacked by status and error code."""
    regions: list[tuple[str, str]] = []
    for bucket in figures.receipts:  # largest region first
        if (bucket.region, bucket.label) not in regions:
            regions.append((bucket.region, bucket.label))
    regions = regions[:10]
    series_totals: dict[str, int] = {}
    for bucket in figures.receipts:
        series_totals[bucket.series] = series_totals.get(bucket.series, 0) + bucket.count
    ranked = sorted(series_totals, key=lambda name: (-series_totals[name], name))
    named = ranked[:RECEIPT_SERIES] if len(ranked) > RECEIPT_SERIES + 1 else ranked
    other = str(_("other"))
    chart = pygal.HorizontalStackedBar(
        style=_style(RECEIPT_COLOURS),
        **_chart_config(height=max(240, 130 + 36 * len(regions)), legend_at_bottom_columns=4),
    )
    # pygal draws the first label at the bottom; the largest region goes at the top.
    chart.x_labels = [label for _region, label in reversed(regions)]
    if regions:
        cells: dict[tuple[str, str], int] = {}
        for bucket in figures.receipts:
            name = bucket.series if bucket.series in named else other
            cells[(name, bucket.region)] = cells.get((name, bucket.region), 0) + bucket.count
        rows: list[list[int | None]] = []
        for name in [*named, *([other] if len(named) < len(ranked) else [])]:
            rows.append([cells.get((name, region)) or None for region, _label in reversed(regions)])
            chart.add(name, rows[-1])
        chart.y_labels = _count_ticks(_stacked_highest(rows))
    return _render(chart)
