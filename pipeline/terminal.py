"""What a person reads in the terminal after a job: a short summary; the whole record stays in the JSON
file beside the output (`--json` prints it instead)."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def flag_summary(summary: dict[str, Any], top_shops: int = 5) -> Group:
    """Totals, the flagged share of lost shoppers, the shops with most flags, rejected rows by reason, and
    every warning."""
    totals = Table(title="nudge list", show_header=False, title_justify="left")
    totals.add_column(style="bold")
    totals.add_column(justify="right")
    rows = summary["rows"]
    totals.add_row("rows read", f"{rows['in']:,} ({rows['used']:,} used, {rows['rejected']:,} rejected)")
    totals.add_row("conversations", f"{summary['conversations']:,}")
    totals.add_row("lost shoppers", f"{summary['lost_shoppers']:,} ({summary['lost_with_purchase_intent']:,} had said they wanted to buy)")
    totals.add_row("flagged", f"{summary['flagged']:,} = {_share(summary['flagged_share_of_lost'])} of lost shoppers")
    totals.add_row("skipped (complaint or refund)", f"{summary['skipped_complaint_or_refund']:,}")
    totals.add_row("order status unknown", f"{summary['order_status_unknown']:,}")
    if estimate := summary.get("accuracy_estimate"):
        totals.add_row("intent accuracy, estimated", f"{estimate['estimated_accuracy']:.2f} on {estimate['buyer_messages']:,} buyer messages "
                       f"(validation {estimate['validation_accuracy']:.2f}; no labels)")
    totals.add_row("nudge list", summary["output"])
    parts: list[Any] = [totals]
    shops = sorted(summary.get("per_shop", {}).items(), key=lambda item: (-item[1].get("flagged", 0), item[0]))[:top_shops]
    if shops:
        table = Table(title=f"top {len(shops)} shops by flags", title_justify="left")
        for name, justify in (("shop", "left"), ("conversations", "right"), ("lost", "right"), ("flagged", "right"), ("share of lost", "right"),
                              ("est. intent accuracy", "right")):
            table.add_column(name, justify=justify)
        for shop, part in shops:
            accuracy = part.get("estimated_accuracy")
            table.add_row(str(shop), f"{part['conversations']:,}", f"{part['lost_shoppers']:,}", f"{part['flagged']:,}", _share(part.get("flagged_share_of_lost")),
                          "n/a" if accuracy is None else f"{accuracy:.2f} ({part['buyer_messages']:,} msgs)")
        parts.append(table)
    if rows.get("rejected_reasons"):
        reasons = Table(title=f"rejected rows -> {rows['rejected_file']}", title_justify="left")
        reasons.add_column("reason")
        reasons.add_column("rows", justify="right")
        for reason, count in sorted(rows["rejected_reasons"].items(), key=lambda item: -item[1]):
            reasons.add_row(reason, f"{count:,}")
        parts.append(reasons)
    for warning in summary.get("warnings", []):
        parts.append(Text(f"warning: {warning}", style="bold yellow"))
    return Group(*parts)


def print_flag_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    (console or Console()).print(flag_summary(summary))
