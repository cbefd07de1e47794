// rpfs serve: the little the page does in the browser — selecting entries for a zip.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const boxes = () => Array.from(document.querySelectorAll("#entries tbody input[type=checkbox]"));
  const button = document.getElementById("download-selection");
  const all = document.getElementById("select-all");
  const update = () => {
    if (!button) return;
    const n = boxes().filter((b) => b.checked).length;
    button.disabled = n === 0;
    button.textContent = n ? `Download ${n} selected (zip)` : "Download selection (zip)";
  };
  if (all) all.addEventListener("change", () => { boxes().forEach((b) => { b.checked = all.checked; }); update(); });
  boxes().forEach((b) => b.addEventListener("change", update));
  update();
});
