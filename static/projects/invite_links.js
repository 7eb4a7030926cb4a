// Copy buttons of the invite-link card: a button with data-copy-from copies the value of the input with that id.
// A separate file, not inline code: the Content Security Policy allows scripts from this origin only.

async function copyFrom(button) {
  const input = document.getElementById(button.dataset.copyFrom);
  if (!input) return;
  input.select();
  try {
    await navigator.clipboard.writeText(input.value);
  } catch {
    // The clipboard API needs a secure context (not plain http on another host): the old way still works there.
    document.execCommand("copy");
  }
  button.textContent = "Copied";
}

for (const button of document.querySelectorAll("button[data-copy-from]")) {
  button.addEventListener("click", () => copyFrom(button));
}
