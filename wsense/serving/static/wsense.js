addEventListener("load", () => {
  const grid = document.querySelector(".grid");
  if (grid) grid.dataset.loaded = [...grid.querySelectorAll("img")].every(i => i.complete && i.naturalWidth > 0);
});
let shown = -1;
const photoLinks = () => [...document.querySelectorAll(".grid figure > a:first-child")];
function openPhoto(i) {
  const links = photoLinks();
  if (i < 0 || i >= links.length) return;
  shown = i;
  let box = document.querySelector(".lightbox");
  if (!box) {
    box = document.createElement("div");
    box.className = "lightbox";
    box.setAttribute("role", "dialog");
    box.append(document.createElement("img"), document.createElement("p"));
    box.addEventListener("click", closePhoto);
    document.body.append(box);
  }
  const figure = links[i].closest("figure");
  box.querySelector("img").src = links[i].getAttribute("href");
  box.querySelector("img").alt = figure.querySelector("figcaption span").textContent;
  box.querySelector("p").textContent = `${figure.querySelector("figcaption span").textContent} · score ` +
    `${figure.querySelector("figcaption b").textContent} · ${i + 1} of ${links.length}` +
    (figure.dataset.meta ? ` · ${figure.dataset.meta}` : "");
  box.hidden = false;
}
function closePhoto() {
  const box = document.querySelector(".lightbox");
  if (box) box.hidden = true;
  shown = -1;
}
document.addEventListener("click", event => {
  const link = event.target.closest && event.target.closest(".grid figure > a:first-child");
  if (!link) return;
  event.preventDefault();
  openPhoto(photoLinks().indexOf(link));
});
document.addEventListener("keydown", event => {
  if (shown < 0) return;
  if (event.key === "Escape") closePhoto();
  else if (event.key === "ArrowRight") openPhoto(shown + 1);
  else if (event.key === "ArrowLeft") openPhoto(shown - 1);
});
async function fragment(response) {
  const part = document.createElement("template");
  part.innerHTML = await response.text();
  return part.content;
}
const nextResults = new IntersectionObserver(entries => {
  for (const entry of entries) if (entry.isIntersecting) loadMore(entry.target);
});
function watchNext() {
  const next = document.querySelector("#results a[rel=next]");
  if (next) nextResults.observe(next);
}
async function loadMore(link) {
  nextResults.unobserve(link);
  const response = await fetch(link.getAttribute("href") + "&fragment=1");
  const more = await fragment(response);
  const grid = document.querySelector("#results .grid"), figures = more.querySelectorAll(".grid > figure");
  if (!response.ok || !grid || !figures.length) return;
  grid.append(...figures);
  document.querySelector("#results .last").textContent = more.querySelector(".last").textContent;
  const next = more.querySelector("a[rel=next]");
  if (next) {
    link.setAttribute("href", next.getAttribute("href"));
    nextResults.observe(link);
  } else {
    link.remove();
  }
}
addEventListener("DOMContentLoaded", watchNext);
document.addEventListener("change", async event => {
  if (!event.target.matches("input[name=photo]") || !event.target.files.length) return;
  const photo = event.target.files[0], results = document.getElementById("results");
  const params = new URLSearchParams({k: document.querySelector("input[name=k]").value});
  const response = await fetch("/similar?" + params, {method: "POST", body: photo,
    headers: {"Content-Type": photo.type || "application/octet-stream"}});
  results.replaceChildren(await fragment(response));
  results.dataset.upload = response.status;
});
