from django.urls import path

from journal import views

urlpatterns = [
    path("", views.index),
    path("health", views.health),
]
