<#function f p>
 	 <#return p + 1></#function>[${f(1)}]
<#function g>text ${1} <#return 2></#function>[${g()}]