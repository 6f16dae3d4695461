"""The stored report as HTML: the templates' <details> pass, any other HTML is shown as text."""

from bot.web.markdown import report_html


def test_only_the_reports_own_details_blocks_are_html() -> None:
    markdown = (
        "<details><summary>Failed calls (2)</summary>\n\n"
        "| case | answer |\n|---|---|\n| c1 | <script>alert(1)</script> |\n\n"
        "</details>\n\n"
        '<img src=x onerror="alert(1)">\n\n'
        "[link](javascript:alert(1)) and <b onclick=x>bold</b>\n"
    )
    html = report_html(markdown)
    assert "<details><summary>Failed calls (2)</summary>" in html and "</details>" in html
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert "&lt;b onclick=x&gt;" in html
    assert "<script" not in html and "<img" not in html and 'href="javascript' not in html
