// Draws the suite page's charts with uPlot (served from /static, no CDN); a click on a point opens its run.
(function () {
  const points = JSON.parse(document.getElementById("points").textContent);
  const xs = points.map((_, i) => i);
  document.querySelectorAll(".chart").forEach((el) => {
    const key = el.dataset.key;
    const ys = points.map((p) => p[key]);
    const opts = {
      width: 440,
      height: 220,
      scales: { x: { time: false } },
      axes: [{ values: (u, ticks) => ticks.map((i) => (points[i] ? points[i].sha : "")) }, {}],
      series: [{ label: "commit", value: (u, i) => (points[i] ? points[i].sha : "") }, { label: key, stroke: "#0969da", width: 2, points: { size: 8 }, spanGaps: true }],
      legend: { show: false },
    };
    const plot = new uPlot(opts, [xs, ys], el);
    plot.over.addEventListener("click", () => {
      const i = plot.cursor.idx;
      if (i != null && points[i]) window.location.href = "/runs/" + points[i].run;
    });
    plot.over.style.cursor = "pointer";
  });
})();
