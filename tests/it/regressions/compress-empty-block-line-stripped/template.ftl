${"a"}<#list [] as x><#else>
<#compress></#compress></#list>