// The wall display: updates its figures in place and pages the schools list; never reloads.
// A fetch that fails keeps the last figures on screen and says since when they are stale.
(() => {
  "use strict";
  const root = document.getElementById("wall");
  if (!root) return;
  const pollMs = Number(root.dataset.pollS) * 1000;
  const rotateMs = Number(root.dataset.rotateS) * 1000;
  const list = document.getElementById("wall-list");
  const pageLabel = document.getElementById("wall-page");
  const stale = document.getElementById("wall-stale");
  let asOfText = root.dataset.asOfText;
  let page = 0;

  const format = (template, values) =>
    template.replace(/%\((\w+)\)s/g, (_, key) => String(values[key] ?? ""));

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function showTiles(tiles) {
    for (const tile of tiles) {
      const box = root.querySelector(`[data-tile="${tile.key}"]`);
      if (!box) continue;
      box.className = `wall-tile ${tile.state}`;
      const big = box.querySelector('[data-field="big"]');
      big.textContent = tile.big;
      if (big.hasAttribute("data-open-alerts")) big.dataset.openAlerts = tile.big;
      const small = box.querySelector('[data-field="small"]');
      small.replaceChildren(document.createTextNode(tile.small));
      for (const badge of tile.badges) {
        small.append(element("span", `badge level-${badge.level}`, badge.label), ` ${badge.count} `);
      }
    }
  }

  function showSchools(schools) {
    const items = schools.map((school) => {
      const item = element("li");
      item.append(element("strong", "", school.name));
      for (const problem of school.problems) {
        item.append(" ", element("span", problem.state, problem.text));
      }
      return item;
    });
    if (items.length === 0) items.push(element("li", "ok", list.dataset.allGood));
    list.replaceChildren(...items);
    layout();
  }

  // How many rows fit is measured, not guessed: the font scales with the screen.
  function perPage() {
    const items = list.children;
    if (items.length === 0) return 1;
    for (const item of items) item.hidden = false;
    const style = getComputedStyle(list);
    const columns = Math.max(1, style.gridTemplateColumns.split(" ").filter(Boolean).length);
    const gap = parseFloat(style.rowGap) || 0;
    const rowHeight = items[0].getBoundingClientRect().height;
    const rows = Math.max(1, Math.floor((list.clientHeight + gap) / (rowHeight + gap)));
    return rows * columns;
  }

  function layout() {
    const items = Array.from(list.children);
    const size = perPage();
    const pages = Math.max(1, Math.ceil(items.length / size));
    page %= pages;
    items.forEach((item, index) => {
      item.hidden = Math.floor(index / size) !== page;
    });
    pageLabel.textContent = pages > 1 ? format(root.dataset.pageText, { page: page + 1, pages }) : "";
    root.dataset.pages = String(pages);
    root.dataset.perPage = String(size);
  }

  function markStale(isStale) {
    stale.hidden = !isStale;
    stale.textContent = isStale ? format(root.dataset.staleText, { time: asOfText }) : "";
    root.classList.toggle("is-stale", isStale);
  }

  async function refresh() {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), Math.max(1000, pollMs * 0.8));
    try {
      const response = await fetch(root.dataset.url, {
        cache: "no-store",
        credentials: "same-origin",
        signal: abort.signal,
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const data = await response.json();
      asOfText = data.as_of_text;
      root.dataset.asOf = data.as_of;
      document.getElementById("wall-clock").textContent = data.clock;
      showTiles(data.tiles);
      showSchools(data.schools);
      markStale(false);
    } catch (error) {
      markStale(true);
    } finally {
      clearTimeout(timer);
      setTimeout(refresh, pollMs);
    }
  }

  layout();
  window.addEventListener("resize", layout);
  setInterval(() => {
    page += 1;
    layout();
  }, rotateMs);
  setTimeout(refresh, pollMs);
})();
