<#assign r = input.big / 3 / 1.5>${r}
${r * input.ms}